"""GPU tests: parity with nn.LSTM (cuDNN), half precision, operator checks, long and large
inputs. They skip, with the reason, where no CUDA device is present (CI has none)."""

import pytest
import torch
from torch import nn

import fastlstm
from helpers import reference_forward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEV = "cuda"


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 parity is judged with TF32 off on both sides."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def pair(I, H, dtype, **kw):
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, device=DEV, dtype=dtype, **kw)
    fast = fastlstm.LSTM(I, H, device=DEV, dtype=dtype, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run_both(ref, fast, x, lengths, lengths_arg=None):
    """Outputs and gradients (input, every parameter) of nn.LSTM (packed) and fastlstm."""
    results = []
    g = None
    for which in ("ref", "fast"):
        xi = x.detach().clone().requires_grad_()
        model = ref if which == "ref" else fast
        model.zero_grad(set_to_none=True)
        if which == "ref":
            out, h, c = reference_forward(ref, xi, lengths)
        else:
            out, (h, c) = fast(xi, lengths=lengths if lengths_arg is None else lengths_arg)
        if g is None:
            gen = torch.Generator(device=DEV).manual_seed(1)
            g = [torch.randn(t.shape, device=DEV, dtype=t.dtype, generator=gen) for t in (out, h, c)]
        ((out * g[0]).sum() + (h * g[1]).sum() + (c * g[2]).sum()).backward()
        grads = {"x": xi.grad}
        grads.update({n: p.grad for n, p in model.named_parameters()})
        results.append(({"out": out, "h_n": h, "c_n": c}, grads))
    return results


GRID = [
    # (layers, bidirectional, proj, bias, batch_first)
    (1, False, 0, True, False),
    (2, True, 0, True, False),
    (3, True, 0, False, True),
    (2, False, 4, True, False),
    (1, True, 4, True, True),
]


@pytest.mark.parametrize("layers,bi,proj,bias,bf", GRID)
@pytest.mark.parametrize("lengths_kind", ["full", "random", "has_one"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_with_cudnn(layers, bi, proj, bias, bf, lengths_kind, dtype):
    T, B, I, H = 13, 6, 5, 16
    ref, fast = pair(I, H, dtype, num_layers=layers, bidirectional=bi, proj_size=proj, bias=bias,
                     batch_first=bf)
    gen = torch.Generator().manual_seed(3)
    lengths = {"full": [T] * B, "random": torch.randint(1, T + 1, (B,), generator=gen).tolist(),
               "has_one": [1, T, 4, 1, 9, T]}[lengths_kind]
    x = torch.randn((B, T, I) if bf else (T, B, I), device=DEV, dtype=dtype)
    (ro, rg), (fo, fg) = run_both(ref, fast, x, lengths,
                                  lengths_arg=torch.tensor(lengths, device=DEV))
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    for k in ro:
        print(k, (ro[k] - fo[k]).abs().max().item())
        torch.testing.assert_close(fo[k], ro[k], **tol)
    for k in rg:
        # Parameter gradients sum over every token: their rounding error scales with the
        # largest entries, not with each entry (see tests/helpers.py).
        scaled = dict(atol=tol["atol"] * max(1.0, rg[k].abs().max().item()), rtol=tol["rtol"])
        torch.testing.assert_close(fg[k], rg[k], **(tol if k == "x" else scaled))


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


def test_zero_lengths_and_cuda_lengths():
    ref, fast = pair(4, 8, torch.float32, bidirectional=True)
    x = torch.randn(6, 4, 4, device=DEV)
    h0 = torch.randn(2, 4, 8, device=DEV)
    c0 = torch.randn(2, 4, 8, device=DEV)
    out, (h, c) = fast(x, (h0, c0), lengths=torch.tensor([6, 0, 3, 0], device=DEV))
    assert torch.all(out[:, 1] == 0) and torch.all(out[3:, 2] == 0)
    assert torch.equal(h[:, 1], h0[:, 1]) and torch.equal(c[:, 3], c0[:, 3])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_error_within_twice_nn_lstm(dtype):
    T, B, I, H = 50, 8, 32, 64
    ref64, _ = pair(I, H, torch.float64, num_layers=2, bidirectional=True)
    lengths = torch.randint(5, T + 1, (B,), generator=torch.Generator().manual_seed(0)).tolist()
    x64 = torch.randn(T, B, I, device=DEV, dtype=torch.float64)
    exact = reference_forward(ref64, x64, lengths)[0]
    ref, fast = pair(I, H, dtype, num_layers=2, bidirectional=True)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    x = x64.to(dtype)
    try:
        ref_out = reference_forward(ref, x, lengths)[0]
    except RuntimeError as e:
        pytest.skip(f"nn.LSTM has no {dtype} kernel here: {e}")
    fast_out = fast(x, lengths=lengths)[0]
    ref_err = (ref_out.double() - exact).abs().max().item()
    fast_err = (fast_out.double() - exact).abs().max().item()
    print(f"{dtype}: nn.LSTM error {ref_err:.3e}, fastlstm error {fast_err:.3e}")
    assert fast_err <= 2 * ref_err


def test_autocast_float16_like_nn_lstm_and_bfloat16_when_asked():
    ref, fast = pair(8, 16, torch.float32)
    x = torch.randn(10, 3, 8, device=DEV)
    with torch.autocast("cuda"):
        r, _ = ref(x)
        f, _ = fast(x, lengths=[10, 4, 7])
    assert f.dtype == r.dtype == torch.float16
    with torch.autocast("cuda", dtype=torch.bfloat16):
        f, _ = fast(x)
    assert f.dtype == torch.bfloat16


def test_gradcheck_float64():
    m = fastlstm.LSTM(3, 4, bidirectional=True, proj_size=2, device=DEV, dtype=torch.float64)
    x = torch.randn(5, 3, 3, device=DEV, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 0, 2], device=DEV)
    assert torch.autograd.gradcheck(lambda x: m(x, lengths=lengths)[0], (x,))


def test_opcheck():
    x = torch.randn(5, 3, 4, device=DEV)
    torch.manual_seed(0)
    w = [torch.randn(16, 4, device=DEV), torch.randn(16, 4, device=DEV),
         torch.randn(16, device=DEV), torch.randn(16, device=DEV)]
    args = (x, torch.tensor([5, 0, 3], device=DEV), torch.randn(1, 3, 4, device=DEV),
            torch.randn(1, 3, 4, device=DEV), w, True, False, False)
    torch.library.opcheck(torch.ops.fastlstm.lstm_layer_forward.default, args)


def test_compile_fullgraph():
    m = fastlstm.LSTM(4, 8, num_layers=2, bidirectional=True, device=DEV)
    x = torch.randn(7, 3, 4, device=DEV)
    lengths = torch.tensor([7, 2, 5], device=DEV)
    eager = m(x, lengths=lengths)[0]
    compiled = torch.compile(m, fullgraph=True)(x, lengths=lengths)[0]
    torch.testing.assert_close(compiled, eager)


def test_100k_steps():
    ref, fast = pair(3, 8, torch.float32)
    x = torch.randn(100_000, 2, 3, device=DEV)
    lengths = [100_000, 31_234]
    out, (h, c) = fast(x, lengths=lengths)
    r_out, r_h, r_c = reference_forward(ref, x, lengths)
    torch.testing.assert_close(h, r_h, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(out[-1], r_out[-1], atol=1e-4, rtol=1e-3)


def test_more_than_2_pow_31_elements():
    # The input gather alone covers T * B * I = 1100 * 1024 * 2048 > 2^31 elements in one
    # launch, and T * B * 4H = 1100 * 1024 * 256 gate rows beyond 2^31 bytes: int64 indexing.
    T, B, I, H = 1100, 1024, 2048, 64
    assert T * B * I > 2**31
    torch.manual_seed(0)
    fast = fastlstm.LSTM(I, H, device=DEV, dtype=torch.bfloat16)
    x = torch.randn(T, B, I, device=DEV, dtype=torch.bfloat16)
    lengths = torch.full((B,), T, device=DEV)
    lengths[-1] = 3
    with torch.no_grad():
        out, (h, _) = fast(x, lengths=lengths)
    # The last sequence is short: its state is from step 2, and its tail is zero.
    assert torch.all(out[3:, -1] == 0)
    torch.testing.assert_close(h[0, -1], out[2, -1])
    torch.testing.assert_close(h[0, 0], out[-1, 0])
