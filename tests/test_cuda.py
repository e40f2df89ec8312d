"""GPU tests: parity with nn.LSTM (cuDNN) and with float64 references, half precision and
autocast, operator checks, torch.compile, long and large inputs. They skip, with the reason,
where no CUDA device is present (CI has none).

Every expected value comes from nn.LSTM (packed, helpers.reference_forward) or from a float64
reference; fastlstm is never compared with itself. Half precision (float16, bfloat16,
autocast) is judged by nn.LSTM's own error: fastlstm's error against float64 must be at most
twice nn.LSTM's in that dtype (plus a floor of a quarter ulp at the quantity's scale).
"""

import math
import os

import pytest
import torch
from torch import nn
from torch.func import functional_call

import fastlstm
from helpers import reference_forward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"
F64 = torch.float64


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 parity is judged with TF32 off on both sides."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def pair(I, H, dtype, device=DEV, **kw):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, device=device, dtype=dtype, **kw)
    fast = fastlstm.LSTM(I, H, device=device, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def copy_of(model, dtype, device=DEV):
    """nn.LSTM with `model`'s configuration and parameters, in dtype on device."""
    m = nn.LSTM(model.input_size, model.hidden_size, num_layers=model.num_layers,
                bias=model.bias, batch_first=model.batch_first,
                bidirectional=model.bidirectional, proj_size=model.proj_size,
                device=device, dtype=dtype)
    m.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in model.state_dict().items()})
    return m


def run_model(model, x, lengths, hx=None, upstream=None, lengths_arg=None, is_ref=None):
    """Forward and backward of nn.LSTM (packed, through reference_forward) or fastlstm.LSTM.
    Returns {name: tensor} with output, h_n, c_n and the gradients of x, h_0, c_0 and every
    parameter (by name) of sum(result * upstream), upstream drawn in float64 when None."""
    is_ref = isinstance(model, nn.LSTM) if is_ref is None else is_ref
    dtype = next(model.parameters()).dtype
    xi = x.detach().clone().requires_grad_()
    hxi = None if hx is None else tuple(t.detach().clone().requires_grad_() for t in hx)
    model.zero_grad(set_to_none=True)
    if is_ref:
        out, h, c = reference_forward(model, xi, lengths, hxi)
    else:
        out, (h, c) = model(xi, hxi, lengths=lengths if lengths_arg is None else lengths_arg)
    if upstream is None:
        gen = torch.Generator(device=x.device).manual_seed(1)
        upstream = [torch.randn(t.shape, device=x.device, dtype=F64, generator=gen)
                    for t in (out, h, c)]
    g = [u.to(dtype) for u in upstream]
    ((out * g[0]).sum() + (h * g[1]).sum() + (c * g[2]).sum()).backward()
    res = {"output": out, "h_n": h, "c_n": c, "grad_input": xi.grad}
    if hxi is not None:
        res["grad_h_0"], res["grad_c_0"] = hxi[0].grad, hxi[1].grad
    for n, p in model.named_parameters():
        res["grad." + n] = p.grad if p.grad is not None else torch.zeros_like(p)
    return res, upstream


def padding_mask(lengths, T, batch_first, device=DEV):
    lt = torch.as_tensor(lengths, device=device)
    mask = torch.arange(T, device=device)[:, None] >= lt[None, :]
    return mask.t() if batch_first else mask


def tolerance_for(name, expected, dtype):
    """float64: 1e-10. float32 (TF32 off): 1e-5 abs + 1e-4 rel; parameter gradients sum over
    every token, so their atol scales with their largest entry (see tests/helpers.py)."""
    t = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    if name.startswith("grad."):
        t["atol"] = t["atol"] * max(1.0, expected.abs().max().item())
    return t


def compare(actual, expected, dtype, names=None):
    for k in (names or expected):
        e, a = expected[k], actual[k]
        print(f"  {k:<26s} max|diff| = {(a.double() - e.double()).abs().max().item():.3e}")
        torch.testing.assert_close(a, e, **tolerance_for(k, e, dtype), msg=lambda m: f"{k}: {m}")


# ---------------------------------------------------------------------------------------------
# nn.LSTM in half precision: what it can run, and judging by its error.


def nn_lstm_runs(dtype):
    """Whether nn.LSTM has a CUDA kernel for dtype. float16: always (cuDNN, or the native fused
    cell). bfloat16: only through cuDNN >= 9.13 (pytorch/pytorch#164411); the native fallback
    _thnn_fused_lstm_cell_cuda has no bfloat16 kernel (pytorch/pytorch#116925)."""
    if dtype != torch.bfloat16:
        return True
    return (torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
            and torch.backends.cudnn.version() >= 91300)


def run_nn_or_expect_failure(fn, dtype):
    """fn() where nn.LSTM supports dtype; where it does not (nn_lstm_runs), nn.LSTM must raise
    and None is returned: an explicit expectation, not a skip."""
    if nn_lstm_runs(dtype):
        return fn()
    with pytest.raises(RuntimeError):
        fn()
    return None


# Only where nn.LSTM cannot run bfloat16 (cuDNN < 9.13): fastlstm's error against float64 must
# be below 8 bfloat16 ulps at the quantity's scale. Looser than the 2x rule; documented.
NO_JUDGE_ULPS = 8


def assert_within_twice_nn(name, fast, ref, exact, dtype):
    """|fast - exact| <= 2 |ref - exact| + eps(dtype)/4 * max(1, max|exact|), as max abs."""
    exact = exact.double()
    scale = max(1.0, exact.abs().max().item()) if exact.numel() else 1.0
    eps = torch.finfo(dtype).eps
    fast_err = (fast.double() - exact).abs().max().item() if exact.numel() else 0.0
    assert math.isfinite(fast_err), f"{name}: fastlstm gives non-finite values"
    if ref is None:
        bound = NO_JUDGE_ULPS * eps * scale
        print(f"  {name:<26s} fastlstm err {fast_err:.3e}  (no nn.LSTM {dtype}) bound "
              f"{bound:.3e}")
    else:
        ref_err = (ref.double() - exact).abs().max().item() if exact.numel() else 0.0
        bound = 2 * ref_err + eps / 4 * scale
        print(f"  {name:<26s} nn.LSTM err {ref_err:.3e}  fastlstm err {fast_err:.3e}  bound "
              f"{bound:.3e}")
    assert fast_err <= bound, f"{name}: fastlstm {dtype} error {fast_err:.3e} > {bound:.3e}"


# ---------------------------------------------------------------------------------------------
# Parity with cuDNN, float32 and float64.

GRID = [
    # (layers, bidirectional, proj, bias, batch_first)
    (1, False, 0, True, False),
    (2, True, 0, True, False),
    (3, True, 0, False, True),
    (2, False, 4, True, False),
    (1, True, 4, True, True),
]
LENGTHS = {
    "full": [13] * 6,
    "random": [5, 13, 2, 9, 11, 7],
    "has_one": [1, 13, 4, 1, 9, 13],
    "has_zero": [0, 13, 4, 0, 9, 1],
    "nan_padding": [3, 13, 0, 8, 1, 12],   # NaN / Inf in every padded position
}


@pytest.mark.parametrize("layers,bi,proj,bias,bf", GRID)
@pytest.mark.parametrize("lengths_kind", list(LENGTHS))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_parity_with_cudnn(layers, bi, proj, bias, bf, lengths_kind, dtype):
    T, B, I, H = 13, 6, 5, 16
    ref, fast = pair(I, H, dtype, num_layers=layers, bidirectional=bi, proj_size=proj, bias=bias,
                     batch_first=bf)
    lengths = LENGTHS[lengths_kind]
    gen = torch.Generator(device=DEV).manual_seed(3)
    x = torch.randn((B, T, I) if bf else (T, B, I), device=DEV, dtype=dtype, generator=gen)
    pad = padding_mask(lengths, T, bf)
    if lengths_kind == "nan_padding":
        fill = torch.tensor([math.nan, math.inf, -math.inf], device=DEV, dtype=dtype)
        x[pad] = fill[torch.arange(int(pad.sum()), device=DEV) % 3][:, None].expand(-1, I)
    D = 2 if bi else 1
    hx = (torch.randn(layers * D, B, proj or H, device=DEV, dtype=dtype, generator=gen),
          torch.randn(layers * D, B, H, device=DEV, dtype=dtype, generator=gen))
    expected, upstream = run_model(ref, x, lengths, hx)
    actual, _ = run_model(fast, x, lengths, hx, upstream,
                          lengths_arg=torch.tensor(lengths, device=DEV))
    compare(actual, expected, dtype)
    # Direct checks: exactly 0 past each length, in the output and the input gradient.
    assert torch.all(actual["output"][pad] == 0)
    assert torch.all(actual["grad_input"][pad] == 0)


# ---------------------------------------------------------------------------------------------
# Zero lengths.


def test_all_zero_lengths_backward():
    _, fast = pair(4, 8, torch.float32, bidirectional=True, proj_size=4)
    x = torch.randn(5, 3, 4, device=DEV, requires_grad=True)
    h0 = torch.randn(2, 3, 4, device=DEV, requires_grad=True)
    c0 = torch.randn(2, 3, 8, device=DEV, requires_grad=True)
    out, (h, c) = fast(x, (h0, c0), lengths=[0, 0, 0])
    assert torch.all(out == 0) and torch.equal(h, h0) and torch.equal(c, c0)
    (out.sum() + 2 * h.sum() + 3 * c.sum()).backward()
    for name, p in fast.named_parameters():
        assert torch.all(p.grad == 0), name
    assert torch.all(x.grad == 0)
    assert torch.all(h0.grad == 2) and torch.all(c0.grad == 3)


@pytest.mark.parametrize("lengths_on", ["cuda", "cpu"])
def test_zero_lengths_match_nn_lstm(lengths_on):
    """Zero-length sequences mixed with others, lengths on the GPU or the CPU, judged by
    nn.LSTM on the non-empty sequences (outputs 0, h_n, c_n = h_0, c_0 for the empty ones)."""
    ref, fast = pair(4, 8, torch.float32, num_layers=2, bidirectional=True)
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(6, 4, 4, device=DEV, generator=gen)
    hx = (torch.randn(4, 4, 8, device=DEV, generator=gen),
          torch.randn(4, 4, 8, device=DEV, generator=gen))
    lengths = [6, 0, 3, 0]
    expected, upstream = run_model(ref, x, lengths, hx)
    actual, _ = run_model(fast, x, lengths, hx, upstream,
                          lengths_arg=torch.tensor(lengths, device=lengths_on))
    compare(actual, expected, torch.float32)
    assert torch.all(actual["output"][:, 1] == 0) and torch.all(actual["output"][3:, 2] == 0)
    assert torch.equal(actual["h_n"][:, 1], hx[0][:, 1])
    assert torch.equal(actual["c_n"][:, 3], hx[1][:, 3])


# ---------------------------------------------------------------------------------------------
# Half precision and autocast, judged by nn.LSTM's own error against float64.


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_forward_and_backward_within_twice_nn_lstm(dtype):
    T, B, I, H = 50, 8, 32, 64
    torch.manual_seed(0)
    # Inputs, states, parameters and upstream gradients are rounded to dtype first, so that
    # float64 sees exactly what the half-precision runs see.
    ref = nn.LSTM(I, H, num_layers=2, bidirectional=True, device=DEV, dtype=dtype)
    ref64 = copy_of(ref, F64)
    fast = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, device=DEV, dtype=dtype)
    fast.load_state_dict(ref.state_dict())
    lengths = torch.randint(5, T + 1, (B,), generator=torch.Generator().manual_seed(0)).tolist()
    gen = torch.Generator(device=DEV).manual_seed(1)
    rnd = lambda *s: torch.randn(*s, device=DEV, dtype=F64, generator=gen).to(dtype)  # noqa
    x = rnd(T, B, I)
    hx = (rnd(4, B, H), rnd(4, B, H))
    upstream = [rnd(T, B, 2 * H).double(), rnd(4, B, H).double(), rnd(4, B, H).double()]

    exact, _ = run_model(ref64, x.double(), lengths, tuple(t.double() for t in hx), upstream)
    nn_res = run_nn_or_expect_failure(lambda: run_model(ref, x, lengths, hx, upstream)[0], dtype)
    ours, _ = run_model(fast, x, lengths, hx, upstream)
    print(f"{dtype}, lengths {lengths}")
    for name in exact:
        assert ours[name].dtype == dtype, (name, ours[name].dtype)
        assert_within_twice_nn(name, ours[name], None if nn_res is None else nn_res[name],
                               exact[name], dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_matches_nn_lstm(dtype):
    """Under torch.autocast("cuda", dtype), fastlstm runs in dtype (float16 is the default, as
    nn.LSTM). Values and gradients (float32 parameters and input) are judged against float64
    by nn.LSTM's own error: nn.LSTM under the same autocast for float16; nn.LSTM run in dtype
    for bfloat16 (where autocast's treatment of nn.LSTM varies between releases)."""
    I, H, T = 8, 16, 10
    ref, fast = pair(I, H, torch.float32, num_layers=2, bidirectional=True)
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(T, 3, I, device=DEV, generator=gen)
    lengths = [10, 4, 7]
    upstream = [torch.randn(s, device=DEV, dtype=F64, generator=gen).to(dtype).double()
                for s in ((T, 3, 2 * H), (4, 3, H), (4, 3, H))]
    # float64 on what autocast computes with: input and parameters rounded to dtype.
    exact_model = copy_of(copy_of(ref, dtype), F64)
    exact, _ = run_model(exact_model, x.to(dtype).double(), lengths, upstream=upstream)

    if dtype == torch.float16:
        def nn_run():
            with torch.autocast("cuda"):
                return run_model(ref, x, lengths, upstream=upstream)[0]
    else:
        def nn_run():
            half = copy_of(ref, dtype)
            res, _ = run_model(half, x.to(dtype), lengths, upstream=upstream)
            return res
    nn_res = run_nn_or_expect_failure(nn_run, dtype)
    with torch.autocast("cuda", dtype=dtype):
        ours, _ = run_model(fast, x, lengths, upstream=upstream)
    assert ours["output"].dtype == dtype and ours["h_n"].dtype == dtype
    assert ours["grad_input"].dtype == torch.float32
    assert all(ours[k].dtype == torch.float32 for k in ours if k.startswith("grad."))
    if nn_res is not None and dtype == torch.float16:
        assert nn_res["output"].dtype == torch.float16
    for name in exact:
        assert_within_twice_nn(name, ours[name], None if nn_res is None else nn_res[name],
                               exact[name], dtype)


# ---------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile.


@pytest.mark.parametrize("cfg,lengths", [
    (dict(bidirectional=True, proj_size=2), [5, 0, 2]),
    (dict(num_layers=2, bias=False), [1, 5, 3]),
], ids=["bi_proj", "uni2_nobias"])
def test_gradcheck_float64_input_states_and_weights(cfg, lengths):
    T, B, I, H = 5, 3, 3, 4
    m = fastlstm.LSTM(I, H, device=DEV, dtype=F64, **cfg)
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    D = 2 if m.bidirectional else 1
    gen = torch.Generator(device=DEV).manual_seed(0)
    r = lambda *s: torch.randn(*s, device=DEV, dtype=F64, generator=gen,  # noqa: E731
                               requires_grad=True)
    x = r(T, B, I)
    h0 = r(m.num_layers * D, B, m.proj_size or H)
    c0 = r(m.num_layers * D, B, H)
    lengths_t = torch.tensor(lengths, device=DEV)

    def f(x, h0, c0, *params):
        out, (h_n, c_n) = functional_call(m, dict(zip(names, params)), (x, (h0, c0)),
                                          {"lengths": lengths_t})
        return out, h_n, c_n

    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_opcheck():
    x = torch.randn(5, 3, 4, device=DEV)
    torch.manual_seed(0)
    w = [torch.randn(16, 4, device=DEV), torch.randn(16, 4, device=DEV),
         torch.randn(16, device=DEV), torch.randn(16, device=DEV)]
    args = (x, torch.tensor([5, 0, 3], device=DEV), torch.randn(1, 3, 4, device=DEV),
            torch.randn(1, 3, 4, device=DEV), w, True, False, False)
    result = torch.library.opcheck(torch.ops.fastlstm.lstm_layer_forward.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
def test_compile_fullgraph_matches_nn_lstm(backend):
    """The compiled module, forward and backward, judged by nn.LSTM (packed)."""
    torch._dynamo.reset()
    ref, fast = pair(4, 8, torch.float32, num_layers=2, bidirectional=True)
    compiled = torch.compile(fast, backend=backend, fullgraph=True)
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randn(7, 3, 4, device=DEV, generator=gen)
    hx = (torch.randn(4, 3, 8, device=DEV, generator=gen),
          torch.randn(4, 3, 8, device=DEV, generator=gen))
    for values in ([7, 2, 5], [0, 7, 1]):
        expected, upstream = run_model(ref, x, values, hx)
        actual, _ = run_model(compiled, x, values, hx, upstream, is_ref=False,
                              lengths_arg=torch.tensor(values, device=DEV))
        compare({k.replace("_orig_mod.", ""): v for k, v in actual.items()}, expected,
                torch.float32)


# ---------------------------------------------------------------------------------------------
# Long and large.


def per_sequence_reference(model, x, lengths, hx, upstream):
    """run_model's results for nn.LSTM run on each sequence alone, unpacked: for long
    sequences on the CPU, autograd through pack_padded_sequence is quadratic in T (60 s for
    20k steps), unpacked nn.LSTM is linear. Parameter gradients sum over the sequences."""
    base = x.detach().clone().requires_grad_()
    hxl = tuple(t.detach().clone().requires_grad_() for t in hx)
    model.zero_grad(set_to_none=True)
    T, B = x.shape[:2]
    out = x.new_zeros(T, B, upstream[0].shape[2])
    h_n, c_n = torch.zeros_like(hx[0]), torch.zeros_like(hx[1])
    for b, n in enumerate(lengths):
        o, (h, c) = model(base[:n, b:b + 1], (hxl[0][:, b:b + 1], hxl[1][:, b:b + 1]))
        ((o * upstream[0][:n, b:b + 1]).sum() + (h * upstream[1][:, b:b + 1]).sum()
         + (c * upstream[2][:, b:b + 1]).sum()).backward()
        out[:n, b], h_n[:, b], c_n[:, b] = o[:, 0].detach(), h[:, 0].detach(), c[:, 0].detach()
    res = {"output": out, "h_n": h_n, "c_n": c_n, "grad_input": base.grad,
           "grad_h_0": hxl[0].grad, "grad_c_0": hxl[1].grad}
    for name, p in model.named_parameters():
        res["grad." + name] = p.grad
    return res


# The 100,000-step test's reference: nn.LSTM in float64 on the CPU takes ~40 s for it, too long
# for the GPU session, so scripts/make_100k_reference.py computes it once, on the CPU, into
# tests/data/lstm_100k_reference.pt (~100 KB): the final states and every parameter gradient in
# full, the outputs and the input gradient at the steps of steps_100k() (windows at the start,
# around 2^15, 2^16 and the short sequence's end, the last steps, and every 211th step), rounded
# to float32 (2^-24 relative, far inside the tolerances). The inputs and the model are drawn on
# the CPU from fixed seeds, so every machine draws the same numbers; the file holds their
# checksums and the test fails, asking for a regeneration, when they differ.
REFERENCE_100K = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                              "lstm_100k_reference.pt")
T_100K = 100_000
LENGTHS_100K = [T_100K, 31_234]


def inputs_100k():
    """The model's float32 state dict (nn.LSTM(3, 8)), x, (h_0, c_0) and the upstream
    gradients (float64) of the 100k test: CPU tensors from fixed seeds."""
    torch.manual_seed(0)
    state = nn.LSTM(3, 8).state_dict()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T_100K, 2, 3, generator=gen)
    hx = (torch.randn(1, 2, 8, generator=gen), torch.randn(1, 2, 8, generator=gen))
    upstream = [torch.randn(s, dtype=F64, generator=gen)
                for s in ((T_100K, 2, 8), (1, 2, 8), (1, 2, 8))]
    return state, x, hx, upstream


def steps_100k():
    """The steps at which the stored reference keeps the outputs and the input gradient."""
    n = LENGTHS_100K[1]
    keep = set(range(0, T_100K, 211))
    for a, b in ((0, 128), (n - 64, n + 64), (2**15 - 64, 2**15 + 64), (2**16 - 64, 2**16 + 64),
                 (T_100K - 128, T_100K)):
        keep.update(range(a, b))
    return torch.tensor(sorted(keep))


def checksums_100k(state, x, hx, upstream):
    """Sums of every input (float64): the stored reference is for these inputs only."""
    parts = [x, *hx, *upstream, *state.values()]
    return torch.stack([t.double().sum() for t in parts] + [t.double().abs().sum() for t in parts])


def reference_100k():
    """The stored reference (scripts/make_100k_reference.py; ~40 s on 2 CPU cores)."""
    state, x, hx, upstream = inputs_100k()
    cpu64 = nn.LSTM(3, 8, dtype=F64)
    cpu64.load_state_dict({k: v.double() for k, v in state.items()})
    exact = per_sequence_reference(cpu64, x.double(), LENGTHS_100K,
                                   tuple(t.double() for t in hx), upstream)
    steps = steps_100k()
    values = {k: (v[steps].float() if k in ("output", "grad_input") else v).detach().clone()
              for k, v in exact.items()}
    return {"steps": steps, "checksums": checksums_100k(state, x, hx, upstream),
            "values": values, "made_with": f"torch {torch.__version__}, nn.LSTM float64 on the CPU"}


def test_100k_steps_against_cpu_float64():
    """100,000 steps (beyond cuDNN's 65,535), compared with nn.LSTM in float64 on the CPU
    (cuDNN rejects sequences this long), stored in tests/data/lstm_100k_reference.pt: outputs
    and input gradients at ~1,100 steps (windows at 2^15, 2^16, the sequence ends, and every
    211th step), the final states, and the gradients of h_0, c_0 and every parameter."""
    stored = torch.load(REFERENCE_100K, weights_only=True)
    state, x, hx, upstream = inputs_100k()
    torch.testing.assert_close(checksums_100k(state, x, hx, upstream), stored["checksums"],
                               rtol=1e-12, atol=0, msg=lambda m: (
                                   "the inputs differ from those of the stored reference: "
                                   "regenerate it (scripts/make_100k_reference.py)\n" + m))
    fast = fastlstm.LSTM(3, 8, device=DEV)
    fast.load_state_dict(state)
    ours, _ = run_model(fast, x.to(DEV), LENGTHS_100K, tuple(t.to(DEV) for t in hx),
                        [u.to(DEV) for u in upstream])
    exact, steps = stored["values"], stored["steps"]
    assert set(ours) == set(exact)
    for name, e in exact.items():
        a = ours[name].double().cpu()
        if name in ("output", "grad_input"):
            a, e = a[steps], e.double()
        t = dict(atol=1e-5, rtol=1e-4)
        if name.startswith("grad."):
            # Sums over 131,234 tokens: float32 rounding grows with the sum (helpers.py).
            t["atol"] = 1e-5 * max(1.0, e.abs().max().item())
        print(f"  {name:<26s} max|diff| = {(a - e).abs().max().item():.3e}")
        torch.testing.assert_close(a, e, **t, msg=lambda m: f"{name}: {m}")
    assert torch.all(ours["output"][31_234:, 1] == 0)


def test_more_than_2_pow_31_elements():
    # The input gather alone covers T * B * I = 1100 * 1024 * 2048 > 2^31 elements in one
    # launch, and T * B * 4H = 1100 * 1024 * 256 gate rows beyond 2^31 bytes: int64 indexing.
    T, B, I, H = 1100, 1024, 2048, 64
    dtype = torch.bfloat16
    assert T * B * I > 2**31
    torch.manual_seed(0)
    fast = fastlstm.LSTM(I, H, device=DEV, dtype=dtype)
    x = torch.randn(T, B, I, device=DEV, dtype=dtype)
    lengths = torch.full((B,), T, device=DEV)
    lengths[-1] = 3
    lengths[B // 2] = 777
    with torch.no_grad():
        out, (h, c) = fast(x, lengths=lengths)
    # A slice of the batch (first, middle, last: every index range of the big launches),
    # against nn.LSTM in float64 on the CPU, and nn.LSTM in bfloat16 for the error scale.
    idx = torch.tensor([0, 1, B // 2, B - 2, B - 1], device=DEV)
    sl_lengths = lengths[idx].tolist()
    xs = x.index_select(1, idx)
    ref = copy_of(fast, dtype)
    cpu64 = copy_of(fast, F64, device="cpu")
    with torch.no_grad():
        exact = reference_forward(cpu64, xs.double().cpu(), sl_lengths)
        nn_res = run_nn_or_expect_failure(lambda: reference_forward(ref, xs, sl_lengths), dtype)
    for k, (name, ours) in enumerate((("output", out.index_select(1, idx)),
                                      ("h_n", h.index_select(1, idx)),
                                      ("c_n", c.index_select(1, idx)))):
        assert_within_twice_nn(name, ours.cpu(), None if nn_res is None else nn_res[k].cpu(),
                               exact[k], dtype)
    # Past each length, exactly 0.
    assert torch.all(out[3:, -1] == 0) and torch.all(out[777:, B // 2] == 0)
