"""Inference without a reserve: under torch.no_grad(), torch.inference_mode(), or when nothing
requires a gradient, fastlstm runs torch.ops.fastlstm.lstm_layer_inference, whose memory
follows the valid tokens instead of the padded T x B. nn.LSTM (packed) is the judge.
"""

import pytest
import torch
from torch.autograd.profiler import profile

import fastlstm
from helpers import assert_close, make_pair, random_lengths, reference_forward

F64 = torch.float64
F32 = torch.float32
FWD = torch.ops.fastlstm.lstm_layer_forward.default
INF = torch.ops.fastlstm.lstm_layer_inference.default

GRAD_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def randn(*shape, dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


def hx_for(ref, B, dtype, seed=1):
    D = 2 if ref.bidirectional else 1
    hout = ref.proj_size if ref.proj_size > 0 else ref.hidden_size
    return (randn(ref.num_layers * D, B, hout, dtype=dtype, seed=seed),
            randn(ref.num_layers * D, B, ref.hidden_size, dtype=dtype, seed=seed + 1))


def check_inference(ref, fast, x, lengths, hx, mode, dtype=F64):
    with torch.no_grad():
        exp_out, exp_h, exp_c = reference_forward(ref, x, lengths, hx)
    with GRAD_MODES[mode]():
        out, (h, c) = fast(x, hx, lengths=torch.tensor(lengths))
    assert_close("output", out, exp_out, dtype)
    assert_close("h_n", h, exp_h, dtype)
    assert_close("c_n", c, exp_c, dtype)
    assert not out.requires_grad


@pytest.mark.parametrize("mode", list(GRAD_MODES))
@pytest.mark.parametrize("num_layers,bidirectional,proj_size,bias", [
    (1, False, 0, True), (1, True, 0, True), (2, True, 0, True), (2, False, 3, True),
    (1, True, 3, False), (2, True, 2, True)])
@pytest.mark.parametrize("kind", ["full", "random", "has_zero", "all_zero"])
def test_parity_core_grid(mode, num_layers, bidirectional, proj_size, bias, kind):
    T, B, I, H = 7, 6, 3, 5
    gen = torch.Generator().manual_seed(3)
    lengths = random_lengths(kind, B, T, gen)
    ref, fast = make_pair(I, H, F64, num_layers=num_layers, bidirectional=bidirectional,
                          proj_size=proj_size, bias=bias)
    check_inference(ref, fast, randn(T, B, I), lengths, hx_for(ref, B, F64), mode)


@pytest.mark.parametrize("mode", list(GRAD_MODES))
@pytest.mark.parametrize("bidirectional,proj_size", [(False, 0), (True, 0), (True, 48)])
def test_parity_many_chunks(mode, bidirectional, proj_size):
    """Enough valid tokens that the input projection runs in several chunks (256 KiB of gates
    and at least 128 rows each: 128 float64 rows at H=128), with lengths that end inside
    chunks."""
    T, B, I, H = 80, 64, 8, 128
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, T + 1, (B,), generator=gen).tolist()
    lengths[3] = T
    assert sum(lengths) > 2 * 1024
    ref, fast = make_pair(I, H, F64, bidirectional=bidirectional, proj_size=proj_size)
    check_inference(ref, fast, randn(T, B, I), lengths, hx_for(ref, B, F64), mode)


@pytest.mark.parametrize("mode", list(GRAD_MODES))
def test_parity_batch_first_float32_default_state(mode):
    T, B, I, H = 9, 5, 4, 16
    ref, fast = make_pair(I, H, F32, num_layers=2, bidirectional=True, batch_first=True)
    lengths = [9, 0, 4, 1, 7]
    x = randn(B, T, I, dtype=F32)
    with torch.no_grad():
        exp_out, exp_h, exp_c = reference_forward(ref, x, lengths)
    with GRAD_MODES[mode]():
        out, (h, c) = fast(x, lengths=lengths)
    assert_close("output", out, exp_out)
    assert_close("h_n", h, exp_h)
    assert_close("c_n", c, exp_c)


def ops_called(fn):
    with profile() as prof:
        fn()
    return {e.name for e in prof.function_events if e.name.startswith("fastlstm::")}


def test_which_op_runs():
    """The reserve-free op runs exactly when no gradient can flow."""
    _, fast = make_pair(3, 4, F64, bidirectional=True)
    x = randn(5, 2, 3)
    lengths = [5, 2]
    assert ops_called(lambda: fast(x, lengths=lengths)) == {"fastlstm::lstm_layer_forward"}
    with torch.no_grad():
        assert ops_called(lambda: fast(x, lengths=lengths)) == {"fastlstm::lstm_layer_inference"}
    with torch.inference_mode():
        assert ops_called(lambda: fast(x, lengths=lengths)) == {"fastlstm::lstm_layer_inference"}
    fast.requires_grad_(False)
    assert ops_called(lambda: fast(x, lengths=lengths)) == {"fastlstm::lstm_layer_inference"}
    # One thing needing a gradient (here the input) is enough to keep the training path.
    assert ops_called(lambda: fast(x.clone().requires_grad_(), lengths=lengths)) == \
        {"fastlstm::lstm_layer_forward"}


@pytest.mark.parametrize("trainable", ["h_0", "c_0", "both"])
def test_frozen_lstm_with_trainable_initial_state_gets_its_gradients(trainable):
    """Weights and input frozen, only h_0 and/or c_0 require a gradient (a learned initial
    state): the training op must run, and the state's gradients are nn.LSTM's, not missing."""
    ref, fast = make_pair(3, 4, F64, num_layers=2, bidirectional=True, proj_size=2)
    fast.requires_grad_(False)
    ref.requires_grad_(False)
    x = randn(6, 3, 3)
    lengths = [6, 0, 4]
    grads = {}
    for name, model in (("ref", ref), ("fast", fast)):
        h0, c0 = (t.clone() for t in hx_for(ref, 3, F64))
        h0.requires_grad_(trainable in ("h_0", "both"))
        c0.requires_grad_(trainable in ("c_0", "both"))
        if name == "ref":
            out, h_n, c_n = reference_forward(model, x, lengths, (h0, c0))
        else:
            called = ops_called(lambda: model(x, (h0, c0), lengths=lengths))
            assert called == {"fastlstm::lstm_layer_forward"}, called
            out, (h_n, c_n) = model(x, (h0, c0), lengths=lengths)
        assert out.requires_grad
        loss = (out * randn(*out.shape, seed=7)).sum() + (h_n * randn(*h_n.shape, seed=8)).sum() \
            + (c_n * randn(*c_n.shape, seed=9)).sum()
        loss.backward()
        grads[name] = {"h_0": h0.grad, "c_0": c0.grad}
    for state in ("h_0", "c_0"):
        if trainable in (state, "both"):
            assert grads["fast"][state] is not None, f"{state} got no gradient"
            assert_close(f"grad {state}", grads["fast"][state], grads["ref"][state], F64)
        else:
            assert grads["fast"][state] is None


def test_inference_op_matches_forward_op():
    """The raw ops agree (the training forward is checked against nn.LSTM elsewhere)."""
    from test_ops import layer_args
    args = layer_args(6, 4, 3, 5, proj=2, bidirectional=True, lengths=[6, 0, 3, 1],
                      requires_grad=False)
    out, h, c, _ = FWD(*args)
    out2, h2, c2 = INF(*args)
    torch.testing.assert_close(out2, out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c2, c, rtol=1e-12, atol=1e-12)
    assert (out2[3:, 2] == 0).all() and (out2[:, 1] == 0).all() and (out2[1:, 3] == 0).all()


# ---------------------------------------------------------------------------------------------
# Memory follows the valid tokens.


def peak_alloc_bytes(fn):
    """Peak of the bytes held by torch's CPU allocator while fn runs, above what was held
    before (every allocation and free, from the profiler's memory events), and fn's result."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        result = fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    assert events, "the profiler recorded no memory events"
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak, result


def op_workspace_bytes(T, B, lengths, bidirectional=True, H=64, I=16):
    """Peak allocation of one inference layer call, minus its outputs (which are T x B by
    contract): what the op holds besides them."""
    torch.manual_seed(0)
    ref, fast = make_pair(I, H, F32, bidirectional=bidirectional)
    x = torch.randn(T, B, I)
    with torch.no_grad():
        fast(x, lengths=lengths)  # warm up
        peak, (out, (h, c)) = peak_alloc_bytes(lambda: fast(x, lengths=lengths))
    outputs = sum(t.numel() * t.element_size() for t in (out, h, c))
    return peak - outputs


def skewed_and_dense(T_long=1000, B=32):
    """(skewed, dense, T_dense): B lengths, one of T_long and the rest 1, and B lengths of
    about equal size with the same sum N, padded to T_dense. T_long * B >= 30 N."""
    skewed = [T_long] + [1] * (B - 1)
    N = sum(skewed)
    T_dense = N // B + 1
    dense = [T_dense] * (B - 1) + [N - T_dense * (B - 1)]
    assert sum(dense) == N and T_long * B >= 30 * N
    return skewed, dense, T_dense


def test_inference_memory_follows_valid_tokens():
    """A skewed batch (one long sequence, the rest of length 1) against a dense batch with
    the same number of valid tokens: the op's own memory, outputs aside, must be about the
    same, not grow with the padded T x B (which is 32x the valid tokens here)."""
    T_long, B = 1000, 32
    skewed, dense, T_dense = skewed_and_dense(T_long, B)
    ws_skewed = op_workspace_bytes(T_long, B, skewed)
    ws_dense = op_workspace_bytes(T_dense, B, dense)
    print(f"  workspace: skewed {ws_skewed / 2**20:.2f} MiB, dense {ws_dense / 2**20:.2f} MiB")
    # The padded-size reserve would be ~T_long*B*(5H+H)*4*2 bytes = 94 MiB here.
    assert ws_skewed <= 1.5 * ws_dense + (1 << 20)


def test_inference_memory_below_training_reserve():
    """The same call in grad mode holds its reserve besides: the measurement sees it."""
    T, B, H = 1000, 32, 64
    skewed = [T] + [1] * (B - 1)
    torch.manual_seed(0)
    _, fast = make_pair(16, H, F32, bidirectional=True)
    x = torch.randn(T, B, 16)
    peak_train, _ = peak_alloc_bytes(lambda: fast(x, lengths=skewed))
    with torch.no_grad():
        peak_inf, _ = peak_alloc_bytes(lambda: fast(x, lengths=skewed))
    # Per direction and valid token: cell and gates (5H floats) and the output (H floats).
    reserve = 2 * sum(skewed) * 6 * H * 4
    print(f"  peak: training {peak_train / 2**20:.2f} MiB, inference {peak_inf / 2**20:.2f} MiB,"
          f" reserve {reserve / 2**20:.2f} MiB")
    assert peak_train > peak_inf + reserve / 2
