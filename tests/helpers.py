"""Shared helpers of the fastlstm correctness tests.

The judge is always torch.nn.LSTM run through pack_padded_sequence / pad_packed_sequence;
fastlstm never computes its own expected values.

nn.LSTM cannot take zero-length sequences, so for a batch with some the reference runs
nn.LSTM on the non-empty sequences only and puts the results back in place (outputs 0,
h_n/c_n = h_0/c_0 for the empty ones, composed with differentiable index_copy so that
autograd gives grad h_0 = grad h_n for them). `check_parity` checks the empty sequences
directly as well.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm

# Tolerances of torch.testing.assert_close: |actual - expected| <= atol + rtol * |expected|.
# Parameter gradients are sums over every valid token, where float rounding grows with the sum
# of |terms| while cancellation can leave single entries near 0: for them atol is raised to
# scaled_atol * max|expected| (see param_grad_tolerance).
#
# float64: both sides run the same math in double precision (fastlstm uses libm exp/tanh for
#   float64). Measured max abs diffs over the parity grid: <= 4.4e-16 on outputs, states and
#   input/state grads, <= 2.9e-14 on parameter grads (3.3e-16 on T=70000 outputs). 1e-10 is
#   tight enough to catch any real error (a wrong gate, a step off by one, a missing term all
#   give >= 1e-4) with room for other BLAS / CPUs.
# float32: fastlstm uses Cephes-style polynomial exp/sigmoid/tanh, its own GEMM order and
#   summation, so it differs from nn.LSTM by rounding. Measured over the parity grid (T <= 40,
#   B <= 150, H <= 64): outputs/h_n/c_n <= 2.4e-7, input and state grads <= 3e-7 (atol 2e-6:
#   ~7x headroom); parameter grads <= 1.9e-5 abs on grads whose largest entries reach ~90,
#   at most ~1/6 of the tolerance (scaled_atol 2e-6 with rtol 5e-5) anywhere, with both
#   float32 results equally far (~1e-5) from a float64 run: legitimate rounding on both sides.
TOLERANCES: Dict[torch.dtype, Dict[str, float]] = {
    torch.float64: dict(atol=1e-10, rtol=1e-10, scaled_atol=1e-10),
    torch.float32: dict(atol=2e-6, rtol=5e-5, scaled_atol=2e-6),
}
# T=70000 in float32 against nn.LSTM's oneDNN kernel (unpacked, one sequence at a time).
# Outputs, states, input and state grads: measured max abs diff <= 3e-7, so the float32
# tolerance applies unchanged. Parameter grads sum over all 82345 tokens, and there the judge
# itself is off by up to 6.4e-4 on bias grads whose largest entries are ~110 (measured against
# a float64 run, where fastlstm's float32 error is 1.4e-5): oneDNN accumulates in a long
# sequential float32 sum. Ratio 5.8e-6, so scaled_atol 2e-5 there (~4x headroom).
LONG_PARAM_GRAD_SCALED_ATOL = 2e-5


def tol(dtype: torch.dtype) -> Dict[str, float]:
    t = TOLERANCES[dtype]
    return dict(atol=t["atol"], rtol=t["rtol"])


def param_grad_tolerance(expected: Tensor, scaled_atol: Optional[float] = None
                         ) -> Dict[str, float]:
    t = TOLERANCES[expected.dtype]
    scaled = t["scaled_atol"] if scaled_atol is None else scaled_atol
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    return dict(atol=max(t["atol"], scaled * scale), rtol=t["rtol"])


LSTM_KWARGS = ("num_layers", "bias", "batch_first", "dropout", "bidirectional", "proj_size")


def make_pair(input_size: int, hidden_size: int, dtype: torch.dtype = torch.float64,
              seed: int = 0, **kwargs) -> Tuple[nn.LSTM, "fastlstm.LSTM"]:
    """(nn.LSTM, fastlstm.LSTM) with identical parameters (copied through state_dict)."""
    unknown = set(kwargs) - set(LSTM_KWARGS)
    assert not unknown, unknown
    torch.manual_seed(seed)
    ref = nn.LSTM(input_size, hidden_size, dtype=dtype, **kwargs)
    fast = fastlstm.LSTM(input_size, hidden_size, dtype=dtype, **kwargs)
    fast.load_state_dict(ref.state_dict())
    assert [n for n, _ in ref.named_parameters()] == [n for n, _ in fast.named_parameters()]
    for (_, a), (_, b) in zip(ref.named_parameters(), fast.named_parameters()):
        assert torch.equal(a, b)
    return ref, fast


def as_list(lengths) -> List[int]:
    if isinstance(lengths, Tensor):
        return [int(v) for v in lengths.tolist()]
    return [int(v) for v in lengths]


def random_lengths(kind: str, B: int, T: int, gen: torch.Generator) -> List[int]:
    """Lengths of one of the kinds the parity grid covers, in no particular order."""
    if kind == "full":
        return [T] * B
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    if kind == "random":
        lengths[int(torch.randint(0, B, (1,), generator=gen))] = T  # some sequence is full
    elif kind == "has_one":
        lengths[int(torch.randint(0, B, (1,), generator=gen))] = 1
        if B > 1:
            lengths[int(torch.randint(0, B, (1,), generator=gen))] = T
    elif kind == "has_zero":
        idx = torch.randperm(B, generator=gen).tolist()
        lengths[idx[0]] = 0
        if B > 2:
            lengths[idx[1]] = T
            lengths[idx[2]] = 0 if B > 3 else 1
    elif kind == "all_zero":
        lengths = [0] * B
    else:
        raise ValueError(kind)
    return lengths


def padding_mask(lengths: Sequence[int], T: int, batch_first: bool) -> Tensor:
    """Bool mask, True at padding positions, shaped [T, B] (or [B, T] when batch_first)."""
    lengths_t = torch.tensor(as_list(lengths))
    mask = torch.arange(T)[:, None] >= lengths_t[None, :]
    return mask.t() if batch_first else mask


def reference_forward(ref: nn.LSTM, x: Tensor, lengths: Sequence[int],
                      hx: Optional[Tuple[Tensor, Tensor]] = None):
    """nn.LSTM on pack_padded_sequence(x, lengths, enforce_sorted=False), unpacked to T steps.

    Zero-length sequences (which nn.LSTM rejects) are left out of the nn.LSTM call and get
    output 0 and (h_n, c_n) = (h_0, c_0), composed differentiably.
    """
    lengths = as_list(lengths)
    bf = ref.batch_first
    bdim = 0 if bf else 1
    T, B = x.shape[1 - bdim], x.shape[bdim]
    D = 2 if ref.bidirectional else 1
    hout = ref.proj_size if ref.proj_size > 0 else ref.hidden_size
    if hx is None:
        h0 = x.new_zeros(ref.num_layers * D, B, hout)
        c0 = x.new_zeros(ref.num_layers * D, B, ref.hidden_size)
    else:
        h0, c0 = hx
    nz = [b for b, n in enumerate(lengths) if n > 0]
    if len(nz) == B:
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
        out, (h_n, c_n) = ref(packed, (h0, c0))
        out, _ = pad_packed_sequence(out, batch_first=bf, total_length=T)
        return out, h_n, c_n
    out_shape = (B, T, D * hout) if bf else (T, B, D * hout)
    if not nz:
        return x.new_zeros(out_shape), h0 * 1, c0 * 1
    idx = torch.tensor(nz, device=x.device)
    packed = pack_padded_sequence(x.index_select(bdim, idx), [lengths[b] for b in nz],
                                  batch_first=bf, enforce_sorted=False)
    out_nz, (h_nz, c_nz) = ref(packed, (h0.index_select(1, idx), c0.index_select(1, idx)))
    out_nz, _ = pad_packed_sequence(out_nz, batch_first=bf, total_length=T)
    out = x.new_zeros(out_shape).index_copy(bdim, idx, out_nz)
    return out, h0.index_copy(1, idx, h_nz), c0.index_copy(1, idx, c_nz)


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.detach().double() - b.detach().double()).abs().max().item()


def assert_close(name: str, actual: Tensor, expected: Tensor, dtype: Optional[torch.dtype] = None,
                 tolerance: Optional[Dict[str, float]] = None) -> float:
    """Prints the max abs diff (and how much of the tolerance it uses), then asserts.
    Names starting with "grad." are parameter gradients (see param_grad_tolerance)."""
    if tolerance is not None:
        t = tolerance
    elif name.startswith("grad."):
        t = param_grad_tolerance(expected)
    else:
        t = tol(dtype or expected.dtype)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    d = max_abs_diff(actual, expected)
    if expected.numel():
        usage = ((actual.detach().double() - expected.detach().double()).abs()
                 / (t["atol"] + t["rtol"] * expected.detach().double().abs())).max().item()
    else:
        usage = 0.0
    print(f"  {name:<28s} {str(expected.dtype)[6:]:<8s} max|diff| = {d:.3e}  "
          f"(tolerance usage {usage:.3f})")
    torch.testing.assert_close(actual.detach(), expected.detach(), **t,
                               msg=lambda m: f"{name}: {m}")
    return d


def upstream_grads(shapes: Sequence[torch.Size], dtype: torch.dtype, seed: int) -> List[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def _run(fn: Callable, base: Tensor, view: Callable[[Tensor], Tensor],
         hx: Optional[Tuple[Tensor, Tensor]], module: nn.Module, grads: Optional[List[Tensor]],
         terms: Sequence[str], x_requires_grad: bool):
    base = base.detach().clone().requires_grad_(x_requires_grad)
    hx_leaf = None
    if hx is not None:
        hx_leaf = tuple(t.detach().clone().requires_grad_() for t in hx)
    module.zero_grad(set_to_none=True)
    x = view(base)
    if x_requires_grad and x is not base:
        x.retain_grad()
    out, h_n, c_n = fn(x, hx_leaf)
    result = {"output": out, "h_n": h_n, "c_n": c_n}
    if grads is None:
        shapes = [out.shape, h_n.shape, c_n.shape]
        grads = upstream_grads(shapes, out.dtype, seed=1234)
    loss = sum((result[name] * g).sum() for name, g in zip(("output", "h_n", "c_n"), grads)
               if name in terms)
    loss.backward()
    result["grad_input"] = base.grad
    # The gradient of the view the model saw (base.grad sums over repeats of an expanded view).
    view_grad = x.grad if x_requires_grad else None
    if hx_leaf is not None:
        result["grad_h_0"], result["grad_c_0"] = hx_leaf[0].grad, hx_leaf[1].grad
    for name, p in module.named_parameters():
        result["grad." + name] = p.grad if p.grad is not None else torch.zeros_like(p)
    return result, grads, view_grad


def check_parity(ref: nn.LSTM, fast: "fastlstm.LSTM", base: Tensor, lengths,
                 hx: Optional[Tuple[Tensor, Tensor]] = None,
                 view: Callable[[Tensor], Tensor] = lambda t: t,
                 lengths_arg=None, terms: Sequence[str] = ("output", "h_n", "c_n"),
                 x_requires_grad: bool = True, grads: Optional[List[Tensor]] = None,
                 tolerance: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Runs nn.LSTM (packed, the judge) and fastlstm.LSTM(lengths=...) on view(base) and
    compares output, h_n, c_n and the gradients of base, h_0, c_0 and every parameter (by name)
    of sum(result * random upstream grad) over `terms`. The upstream grad of `output` is nonzero
    in the padding too (both must ignore it). Also checks directly that outputs and input grads
    are exactly 0 past each length and that zero-length sequences pass h_0/c_0 (and the
    gradient of h_n/c_n) straight through. Returns the max abs diff per quantity.
    """
    lengths_list = as_list(lengths)
    lengths_arg = lengths if lengths_arg is None else lengths_arg
    dtype = base.dtype
    exp, grads, _ = _run(lambda x, h: reference_forward(ref, x, lengths_list, h), base, view, hx,
                      ref, grads, terms, x_requires_grad)

    def fast_fn(x, h):
        out, (h_n, c_n) = fast(x, h, lengths=lengths_arg)
        return out, h_n, c_n

    act, _, act_view_grad = _run(fast_fn, base, view, hx, fast, grads, terms, x_requires_grad)
    assert set(act) == set(exp)
    print(f"parity: lengths={lengths_list} dtype={dtype}")
    diffs = {}
    for name in exp:
        # A missing gradient (no path from the loss) counts as zeros, on either side.
        e, a = exp[name], act[name]
        if e is None and a is None:
            continue
        e = torch.zeros_like(a) if e is None else e
        a = torch.zeros_like(e) if a is None else a
        diffs[name] = assert_close(name, a, e, dtype, tolerance)

    # Direct checks, independent of nn.LSTM.
    bf = ref.batch_first
    T = view(base).shape[1 if bf else 0]
    pad = padding_mask(lengths_list, T, bf)
    out = act["output"]
    assert torch.all(out[pad] == 0), "output is not exactly 0 past the lengths"
    if x_requires_grad:
        gx = act_view_grad
        assert torch.all(gx[pad] == 0), "grad of the input is not exactly 0 in the padding"
    zero = [b for b, n in enumerate(lengths_list) if n == 0]
    if zero:
        z = torch.tensor(zero)
        g_out, g_h, g_c = grads
        h0 = hx[0] if hx is not None else torch.zeros_like(act["h_n"])
        c0 = hx[1] if hx is not None else torch.zeros_like(act["c_n"])
        assert torch.equal(out.index_select(0 if bf else 1, z),
                           torch.zeros_like(out.index_select(0 if bf else 1, z)))
        assert torch.equal(act["h_n"][:, z], h0[:, z]), "zero length: h_n != h_0"
        assert torch.equal(act["c_n"][:, z], c0[:, z]), "zero length: c_n != c_0"
        if hx is not None:
            want_h = g_h[:, z] if "h_n" in terms else torch.zeros_like(g_h[:, z])
            want_c = g_c[:, z] if "c_n" in terms else torch.zeros_like(g_c[:, z])
            assert torch.equal(act["grad_h_0"][:, z], want_h), "zero length: grad h_0 != grad h_n"
            assert torch.equal(act["grad_c_0"][:, z], want_c), "zero length: grad c_0 != grad c_n"
    return diffs


def round_to_tf32(t):
    """float32 rounded to TF32 (10 mantissa bits), to nearest with ties away from zero, as PTX
    cvt.rna.tf32.f32 rounds; inf and nan kept. Written out here, not taken from fastlstm."""
    bits = t.float().view(torch.int32)
    rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return torch.where(torch.isfinite(t), rounded, t.float())


def cpu_has(flag: str) -> bool:
    """Whether /proc/cpuinfo lists `flag` (Linux; False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False


def max_abs_err(a: Tensor, b: Tensor) -> float:
    """Largest |a - b| in float64 (0 for empty tensors)."""
    return (a.detach().double() - b.detach().double()).abs().max().item() if a.numel() else 0.0


def run_judged(model, x: Tensor, lengths: Sequence[int], hx: Tuple[Tensor, Tensor], grad: bool,
               fast: bool) -> List[Tensor]:
    """(output, h_n, c_n[, grads of x and of each parameter]) of one model, in its dtype:
    fastlstm with lengths=, or nn.LSTM through reference_forward. The gradients come from the
    same random output gradients (seed 3) for every model."""
    x = x.detach().clone().requires_grad_(grad)
    hx = tuple(h.detach().clone() for h in hx)
    with torch.set_grad_enabled(grad):
        if fast:
            out, (h, c) = model(x, hx, lengths=torch.tensor(lengths))
        else:
            out, h, c = reference_forward(model, x, lengths, hx)
    res = [out, h, c]
    if grad:
        model.zero_grad(set_to_none=True)
        gen = torch.Generator().manual_seed(3)
        g = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype) for t in res]
        torch.autograd.backward(res, g)
        res += [x.grad] + [p.grad for p in model.parameters()]
    return res
