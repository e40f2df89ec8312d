"""The ops' outputs follow the input's memory order (csrc/layer_io.h, empty_tb).

A batch-first caller hands the op input.transpose(0, 1): [T, B, I], batch-major in memory. The
op then allocates output [T, B, D Hout] and grad_input [T, B, I] batch-major too, so that the
caller's output.transpose(0, 1) is a contiguous [B, T, D Hout] and the next layer (a Linear, a
Keras Dense) reads it without a copy. nn.LSTM's batch-first output is a transposed view: the
values are the same, the strides better. Judged by nn.LSTM over packed sequences; the fake
kernels (torch.compile) must give the same strides as the real ones (opcheck).
"""

import pytest
import torch
from torch.library import opcheck

from helpers import assert_close, make_pair, padding_mask, reference_forward

F64 = torch.float64
LENGTHS = [7, 0, 3, 7, 1, 5]   # B = 6, T = 7, an empty sequence among them
T, I, H = 7, 5, 4


def _run(fast, x, grad, gen):
    """fastlstm on x: output, h_n, c_n and (training) the input's gradient for a random
    upstream gradient drawn from gen (None in inference)."""
    with torch.set_grad_enabled(grad):
        out, (h_n, c_n) = fast(x, lengths=torch.tensor(LENGTHS))
    if not grad:
        return out, h_n, c_n, None, None
    g = torch.randn(out.shape, generator=gen, dtype=F64)
    gx, = torch.autograd.grad(out, x, g.to(out.dtype))
    return out, h_n, c_n, g, gx


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_output_and_input_grad_keep_the_input_memory_order(batch_first, layers, bidirectional,
                                                            grad, dtype):
    ref, fast = make_pair(I, H, dtype=dtype, num_layers=layers, bidirectional=bidirectional,
                          batch_first=batch_first)
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(len(LENGTHS), T, I, generator=gen, dtype=dtype)
    x = (base if batch_first else base.transpose(0, 1).contiguous()).requires_grad_(grad)
    out, h_n, c_n, g, gx = _run(fast, x, grad, gen)
    # Contiguous in the caller's own layout: [B, T, *] batch-first, [T, B, *] time-major.
    assert out.is_contiguous(), out.stride()
    x_ref = x.detach().clone().requires_grad_(grad)
    want, h_want, c_want = reference_forward(ref, x_ref, LENGTHS)
    assert_close("output", out, want)
    assert_close("h_n", h_n, h_want)
    assert_close("c_n", c_n, c_want)
    mask = padding_mask(LENGTHS, T, batch_first)
    assert torch.all(out[mask] == 0)
    if grad:
        gx_want, = torch.autograd.grad(want, x_ref, g.to(dtype))
        assert gx.is_contiguous(), gx.stride()
        assert_close("grad_input", gx, gx_want)
        assert torch.all(gx[mask] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
def test_batch_first_equals_time_major_bit_for_bit(grad, dtype):
    """Only where the rows land differs: the same model on the same values, batch-first and
    time-major, gives the same bits (the half types too)."""
    _, fast = make_pair(I, H, dtype=F64, num_layers=2, bidirectional=True, batch_first=True)
    fast.to(dtype)
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(len(LENGTHS), T, I, generator=gen, dtype=F64).to(dtype)
    g = torch.randn(len(LENGTHS), T, 2 * H, generator=gen, dtype=F64).to(dtype)  # [B, T, 2H]
    results = {}
    for batch_first in (True, False):
        fast.batch_first = batch_first
        x = (base if batch_first else base.transpose(0, 1)).contiguous().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out, (h_n, c_n) = fast(x, lengths=torch.tensor(LENGTHS))
        assert out.is_contiguous(), (batch_first, out.stride())
        as_bf = (lambda t: t) if batch_first else (lambda t: t.transpose(0, 1))
        results[batch_first] = [as_bf(out), h_n, c_n]
        if grad:
            gx, = torch.autograd.grad(out, x, as_bf(g))
            assert gx.is_contiguous(), (batch_first, gx.stride())
            results[batch_first].append(as_bf(gx))
    for what, a, b in zip(("output", "h_n", "c_n", "grad_input"), results[True], results[False]):
        assert torch.equal(a, b), what


def _layer_args(batch_major):
    """One bidirectional layer's op arguments, input [T, B, I] time- or batch-major."""
    gen = torch.Generator().manual_seed(0)
    B = len(LENGTHS)
    x = torch.randn(B, T, I, generator=gen, dtype=F64).transpose(0, 1)
    if not batch_major:
        x = x.contiguous()
    h0, c0 = (torch.randn(2, B, H, generator=gen, dtype=F64) for _ in range(2))
    weights = [torch.randn(*s, generator=gen, dtype=F64) * 0.5
               for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)] * 2]
    return x, torch.tensor(LENGTHS), h0, c0, weights


@pytest.mark.parametrize("batch_major", [True, False])
def test_padding_is_written_in_either_order(batch_major):
    """Freed outputs filled with NaN come back from the allocator: every padding position is
    written (zeroed), in the batch-major layout as in the time-major one."""
    x, lengths, h0, c0, weights = _layer_args(batch_major)
    args = (x, lengths, h0, c0, weights, True, False, True)
    ops = {"forward": torch.ops.fastlstm.lstm_layer_forward,
           "inference": torch.ops.fastlstm.lstm_layer_inference}
    mask = padding_mask(LENGTHS, T, batch_first=False)
    for name, op in ops.items():
        first = op(*args)[0].clone()
        assert (first.stride(0) < first.stride(1)) == batch_major, (name, first.stride())
        for _ in range(3):
            out = op(*args)
            out[0].fill_(float("nan"))
            del out
            again = op(*args)[0]
            assert torch.equal(again, first), name
            assert torch.all(again[mask] == 0), name


def test_backward_grad_input_padding_is_written_batch_major():
    x, lengths, h0, c0, weights = _layer_args(batch_major=True)
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, lengths, h0, c0, weights, True, False, True)
    args = (torch.ones_like(out), None, None, x, lengths, h0, c0, weights, reserve, True, False,
            True, True)
    first = torch.ops.fastlstm.lstm_layer_backward(*args)[0].clone()
    assert first.stride(0) < first.stride(1), first.stride()
    for _ in range(3):
        g = torch.ops.fastlstm.lstm_layer_backward(*args)[0]
        g.fill_(float("nan"))
        del g
        again = torch.ops.fastlstm.lstm_layer_backward(*args)[0]
        assert torch.equal(again, first)
    assert torch.all(first[padding_mask(LENGTHS, T, batch_first=False)] == 0)


def test_fake_kernels_give_the_real_strides_batch_major():
    """opcheck's test_faketensor compares the fake kernels' strides with the real ones."""
    x, lengths, h0, c0, weights = _layer_args(batch_major=True)
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, lengths, h0, c0, weights, True, False, True)
    opcheck(torch.ops.fastlstm.lstm_layer_inference.default,
            (x, lengths, h0, c0, weights, True, False, True), test_utils=("test_faketensor",))
    opcheck(torch.ops.fastlstm.lstm_layer_forward.default,
            (x, lengths, h0, c0, weights, True, False, True), test_utils=("test_faketensor",))
    opcheck(torch.ops.fastlstm.lstm_layer_backward.default,
            (torch.ones_like(out), None, None, x, lengths, h0, c0, weights, reserve, True,
             False, True, True), test_utils=("test_faketensor",))
    opcheck(torch.ops.fastlstm._layer_backward_tensors.default,
            (torch.ones_like(out), None, None, x, lengths, h0, c0, reserve, True, False, True,
             True, *weights, None, None), test_utils=("test_faketensor",))


def test_compiled_batch_first_model_matches_eager():
    """torch.compile traces with the fake kernels' strides: a batch-first model with a Linear
    head, compiled whole, gives eager's output and gradients."""
    torch.manual_seed(0)
    lstm = type(make_pair(I, H, dtype=torch.float32)[1])(I, H, batch_first=True,
                                                          bidirectional=True)
    head = torch.nn.Linear(2 * H, 3)

    def model(x, lengths):
        out, _ = lstm(x, lengths=lengths)
        return head(out)

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.randn(len(LENGTHS), T, I, requires_grad=True)
    lengths = torch.tensor(LENGTHS)
    got, want = compiled(x, lengths), model(x, lengths)
    torch.testing.assert_close(got, want)
    g_got, = torch.autograd.grad(got.square().sum(), x)
    g_want, = torch.autograd.grad(want.square().sum(), x)
    torch.testing.assert_close(g_got, g_want)
