"""Accuracy of the float32 cell math (csrc/cpu/fast_math.h: polynomial exp, sigmoid, tanh),
measured through the op against nn.LSTM in float64.

Gate pre-activations are fed straight into the cell: input and recurrent weights are zero, so
each gate's pre-activation is exactly its bias (b_hh = 0), and the cell state is exactly c_0
where the "c" layout sets f = 1, i*g = 0. Every value of the sweep (about [-200, 200] in steps
of 0.1, small magnitudes down to 1e-30, the edges of exp's clamps, +-inf and NaN) goes through
each gate (i, f, g, o) and through the cell state, forward (h_n, c_n) and backward (the
gradients of b_ih, which are the gate gradients, and of c_0).

Also float32 parity with nn.LSTM where the inputs and weights are scaled x100, which drives
the gates deep into saturation (|pre-activation| in the hundreds).

These run under every CPU instruction-set variant in tests/test_cpu_isa.py.
"""

import math

import pytest
import torch
from torch import nn

from helpers import _run, make_pair, random_lengths, reference_forward

FWD = torch.ops.fastlstm.lstm_layer_forward.default
F32, F64 = torch.float32, torch.float64

# Measured max abs diff to float64 over the whole sweep: 1.3e-7 forward, 2.1e-7 backward (values
# are at most ~1 there; relative diff on the cell state up to 200 is <= 1.7e-7). 5e-7 + 2e-6 * |y|
# leaves >= 2x room; removing exp's clamp gives errors of order 1 (sigmoid(-90) = 1, ...).
CELL_TOL = dict(atol=5e-7, rtol=2e-6)
GATES = "ifgo"
NEUTRAL = 20.0  # sigmoid(20) and tanh(20) round to 1 in float32


def sweep_values():
    grid = torch.linspace(-200, 200, 4001, dtype=F64)
    small = torch.logspace(-30, 0, 61, dtype=F64)
    # 0.55: where fast_math.h's float32 tanh changes form; 0.625: the float64 tanh's.
    edges = torch.tensor([0.55, 0.5499, 0.5501, 0.275, 0.625, 0.6249, 0.6251, 44.0, 44.4, 44.5,
                          45.0, 87.0, 87.5, 88.0, 88.5, 88.7, 89.0, 89.5, 90.0, 100.0, 1e3, 1e6,
                          1e30, 3.4e38], dtype=F64)
    specials = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan], dtype=F64)
    return torch.cat([grid, small, -small, edges, -edges, specials]).to(F32)


def layout(which, v):
    """Pre-activations [4, N] (rows i, f, g, o) and c_0 [N] sweeping v through `which`."""
    n = v.numel()
    pre = torch.full((4, n), NEUTRAL, dtype=F32)
    c0 = torch.full((n,), 0.3, dtype=F32)
    if which == "c":                 # c = 1 * c_0 + 0 * 0: the sweep is the cell state
        pre[0] = -math.inf
        pre[1] = math.inf            # f = 1 exactly in both precisions (sigmoid(20) is not)
        pre[2] = 0.0
        c0 = v.clone()
    else:
        pre[GATES.index(which)] = v
    return pre, c0


def cell_step(dtype, pre, c0, judge=None):
    """One step of one layer (B = 1, H = N) through nn.LSTM (the judge: by default in float64)
    or the fastlstm op. Returns h_n, c_n, grad of the gate pre-activations [4, N] and grad of
    c_0, for the loss sum(h_n) + 0.5 * sum(c_n)."""
    judge = dtype == F64 if judge is None else judge
    H = pre.shape[1]
    w_ih = torch.zeros(4 * H, 1, dtype=dtype, requires_grad=True)
    w_hh = torch.zeros(4 * H, H, dtype=dtype, requires_grad=True)
    b_ih = pre.to(dtype).reshape(4 * H).clone().requires_grad_()
    b_hh = torch.zeros(4 * H, dtype=dtype, requires_grad=True)
    x = torch.zeros(1, 1, 1, dtype=dtype)
    h0 = torch.zeros(1, 1, H, dtype=dtype)
    c0 = c0.to(dtype).reshape(1, 1, H).clone().requires_grad_()
    if judge:
        ref = nn.LSTM(1, H, dtype=dtype)
        with torch.no_grad():
            for p in ref.parameters():
                p.zero_()
        b_ih = ref.bias_ih_l0
        with torch.no_grad():
            b_ih.copy_(pre.to(dtype).reshape(4 * H))
        _, (h, c) = ref(x, (h0, c0))
    else:
        _, h, c, _ = FWD(x, torch.tensor([1]), h0, c0, [w_ih, w_hh, b_ih, b_hh], True, False,
                         False)
    g_pre, g_c0 = torch.autograd.grad(h.sum() + 0.5 * c.sum(), (b_ih, c0))
    return h.reshape(H), c.reshape(H), g_pre.reshape(4, H), g_c0.reshape(H)


def check_close(name, actual, expected, tolerance=CELL_TOL):
    actual, expected = actual.detach().double(), expected.detach().double()
    both = torch.isfinite(actual) & torch.isfinite(expected)
    d = (actual - expected)[both].abs()
    print(f"  {name:<22s} max|diff| = {d.max().item() if d.numel() else 0.0:.3e}")
    # NaN where float64 has NaN, the same infinities, and finite values close.
    torch.testing.assert_close(actual, expected, equal_nan=True, **tolerance,
                               msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("which", ["i", "f", "g", "o", "c"])
def test_cell_sweep_against_float64(which):
    v = sweep_values()
    pre, c0 = layout(which, v)
    chunk = 1024  # H per call; w_hh is [4H, H] (16 MiB in float32)
    for start in range(0, v.numel(), chunk):
        sl = slice(start, start + chunk)
        fast = cell_step(F32, pre[:, sl], c0[sl])
        exact = cell_step(F64, pre[:, sl], c0[sl])
        span = f"{which} sweep {v[sl][0].item():.3g}..{v[sl][-1].item():.3g}"
        check_close(span + " h_n", fast[0], exact[0])
        check_close(span + " c_n", fast[1], exact[1])
        # An infinite cell state makes the f-gate gradient inf * f * (1 - f) = inf * 0: NaN
        # in both, but not a case worth pinning down. Gradients of finite states only.
        finite = torch.isfinite(c0[sl])
        check_close(span + " grad gates", fast[2][:, finite], exact[2][:, finite])
        check_close(span + " grad c_0", fast[3][finite], exact[3][finite])


def test_tanh_near_zero_keeps_its_relative_accuracy():
    """h = o * tanh(c) with o = 1 and |c| from 1e-30 to 0.5: float32 tanh without cancellation
    near 0, so h is right to a few ulp of itself, not only to CELL_TOL's absolute 5e-7 (a tanh
    of 1 - 2 e^-2|c| / (1 + e^-2|c|) would be off by ~6e-8 absolute, all of h at |c| = 1e-7)."""
    small = torch.logspace(-30, math.log10(0.5), 301, dtype=F64)
    v = torch.cat([small, -small]).to(F32)
    pre, c0 = layout("c", v)
    pre[3] = math.inf  # o = 1 exactly in both precisions
    h_fast, h_exact = cell_step(F32, pre, c0)[0], cell_step(F64, pre, c0)[0]
    torch.testing.assert_close(h_fast.double(), h_exact, rtol=1e-6, atol=0)


# float64 (fast_math.h's double exp, sigmoid and tanh, within ~2 ulp of libm) against nn.LSTM in
# float64 over the same sweep. Measured max abs diff 4.4e-16 on every output and gradient;
# 4e-15 + 4e-15 * |y| leaves ~10x room. (Single-precision math anywhere would be off by ~1e-8.)
CELL_TOL_F64 = dict(atol=4e-15, rtol=4e-15)


def sweep_values_f64():
    """sweep_values() in float64, with exp's float64 clamps (|x| around 708) instead."""
    v = sweep_values().double()
    edges = torch.tensor([354.0, 354.5, 355.0, 700.0, 708.0, 708.5, 709.0, 709.5, 710.0, 745.0,
                          1e300], dtype=F64)
    return torch.cat([v[torch.isfinite(v) | torch.isnan(v)], edges, -edges,
                      torch.tensor([math.inf, -math.inf], dtype=F64)])


@pytest.mark.parametrize("which", ["i", "f", "g", "o", "c"])
def test_cell_sweep_float64_against_nn_lstm(which):
    v = sweep_values_f64()
    pre, c0 = layout(which, v.float())
    pre = pre.double()
    pre[GATES.index(which) if which != "c" else 0] = v if which != "c" else -math.inf
    c0 = v.clone() if which == "c" else c0.double()
    chunk = 1024
    for start in range(0, v.numel(), chunk):
        sl = slice(start, start + chunk)
        fast = cell_step(F64, pre[:, sl], c0[sl], judge=False)
        exact = cell_step(F64, pre[:, sl], c0[sl], judge=True)
        span = f"{which} sweep {v[sl][0].item():.3g}..{v[sl][-1].item():.3g}"
        # Saturation as libm has it: sigmoid(-1e4) is exactly 0 (e^1e4 overflows to inf), so
        # exact zeros stay exact (a dropout mask read off the output relies on it).
        for k, name in enumerate(("h_n", "c_n")):
            assert torch.equal(fast[k] == 0, exact[k] == 0), f"{span} {name}: zeros differ"
        check_close(span + " h_n", fast[0], exact[0], CELL_TOL_F64)
        check_close(span + " c_n", fast[1], exact[1], CELL_TOL_F64)
        finite = torch.isfinite(c0[sl])
        check_close(span + " grad gates", fast[2][:, finite], exact[2][:, finite], CELL_TOL_F64)
        check_close(span + " grad c_0", fast[3][finite], exact[3][finite], CELL_TOL_F64)


def test_sweep_covers_the_clamps_and_specials():
    """The sweep must reach exp's clamps (|x| > 88) in every function: sigmoid(-x) calls
    exp(x), tanh(x) calls exp(2|x|)."""
    v = sweep_values()
    finite = v[torch.isfinite(v)]
    assert finite.min() <= -200 and finite.max() >= 200
    assert torch.isnan(v).any() and (v == math.inf).any() and (v == -math.inf).any()
    assert ((v > 88) & (v < 100)).sum() >= 100 and ((v < -88) & (v > -100)).sum() >= 100


# nn.LSTM in float32 is itself off from float64 here (saturated gates, |pre-activation| in the
# thousands, gradients scaled by the weights): fastlstm's float32 error against float64 must be
# at most twice nn.LSTM's, plus a floor of 1e-6 of the quantity's largest entry. Measured
# (seeds 0-2, uni and bi, one layer): fastlstm / nn.LSTM error ratio <= 1.0 on every output,
# state and gradient. (Two layers amplify rounding chaotically, ratios then wander to ~1.8.)
# Removing exp's clamp gives output errors of order 1.
SCALE = 100


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_float32_scaled_x100_within_twice_nn_lstm_error(bidirectional, seed):
    T, B, I, H = 12, 6, 5, 16
    ref, fast = make_pair(I, H, F32, seed=seed, bidirectional=bidirectional)
    with torch.no_grad():
        for m in (ref, fast):
            for p in m.parameters():
                p.mul_(SCALE)
    exact_model = nn.LSTM(I, H, bidirectional=bidirectional, dtype=F64)
    exact_model.load_state_dict({k: v.double() for k, v in ref.state_dict().items()})
    gen = torch.Generator().manual_seed(seed + 5)
    lengths = random_lengths("has_zero", B, T, gen)
    x = torch.randn(T, B, I, generator=gen, dtype=F64).mul(SCALE).to(F32)
    D = 2 if bidirectional else 1
    hx = tuple(torch.randn(D, B, H, generator=gen, dtype=F64).to(F32) for _ in range(2))
    terms = ("output", "h_n", "c_n")
    exact, grads, _ = _run(lambda x, h: reference_forward(exact_model, x, lengths, h),
                           x.double(), lambda t: t, tuple(t.double() for t in hx), exact_model,
                           None, terms, True)
    grads32 = [g.float() for g in grads]
    nn32, _, _ = _run(lambda x, h: reference_forward(ref, x, lengths, h), x, lambda t: t, hx,
                      ref, grads32, terms, True)

    def fast_fn(x, h):
        out, (h_n, c_n) = fast(x, h, lengths=lengths)
        return out, h_n, c_n

    ours, _, _ = _run(fast_fn, x, lambda t: t, hx, fast, grads32, terms, True)
    pre = x.double()[0] @ exact_model.weight_ih_l0.double().T
    assert pre.abs().max() > 500, "the scaling no longer saturates the gates"
    assert set(ours) == set(exact)
    for name in exact:
        e = exact[name].double()
        nn_err = (nn32[name].double() - e).abs().max().item()
        our_err = (ours[name].double() - e).abs().max().item()
        bound = 2 * nn_err + 1e-6 * max(1.0, e.abs().max().item())
        print(f"  {name:<24s} nn.LSTM err {nn_err:.2e}  fastlstm err {our_err:.2e}  "
              f"bound {bound:.2e}")
        assert our_err <= bound, f"{name}: fastlstm float32 error {our_err:.3e} > {bound:.3e}"
