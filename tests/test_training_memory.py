"""The training forward's reserve (what the backward needs) holds one row per valid token, so
a padded batch costs no reserve for its padding. nn.LSTM over packed input is the judge of
the gradients; the sizes are checked against the layout's formula, written out here."""

import pytest
import torch

import fastlstm
from helpers import make_pair, reference_forward
from test_inference import peak_alloc_bytes, skewed_and_dense

FWD = torch.ops.fastlstm.lstm_layer_forward.default


def expected_reserve_bytes(tokens, H, Hout, D, proj, dtype):
    """D * round64(N * (5H acc + (Hout [+ H]) T)): cell (H) and gates (4H) in the accumulation
    type (float32 for half types), the output (Hout) and, with a projection, the raw h (H)."""
    t_size = torch.tensor([], dtype=dtype).element_size()
    acc = 4 if dtype in (torch.float16, torch.bfloat16) else t_size
    per_dir = tokens * (5 * H * acc + (Hout + (H if proj else 0)) * t_size)
    return D * (-(-per_dir // 64) * 64)


def raw_forward(T, lengths, I, H, proj, D, dtype):
    B = len(lengths)
    Hout = proj or H
    g = torch.Generator().manual_seed(0)
    weights = []
    for _ in range(D):
        weights += [torch.randn(4 * H, I, generator=g), torch.randn(4 * H, Hout, generator=g),
                    torch.randn(4 * H, generator=g), torch.randn(4 * H, generator=g)]
        if proj:
            weights.append(torch.randn(Hout, H, generator=g))
    weights = [w.to(dtype) for w in weights]
    x = torch.randn(T, B, I, generator=g).to(dtype)
    h0 = torch.zeros(D, B, Hout, dtype=dtype)
    c0 = torch.zeros(D, B, H, dtype=dtype)
    return FWD(x, torch.tensor(lengths), h0, c0, weights, True, proj > 0, D == 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("proj,D", [(0, 1), (0, 2), (3, 2)])
def test_reserve_holds_one_row_per_valid_token(dtype, proj, D):
    T, H, I = 9, 5, 4
    for lengths in ([9, 1, 1, 1], [3, 3, 3, 2], [0, 0, 0, 0], [9, 0, 4, 2]):
        reserve = raw_forward(T, lengths, I, H, proj, D, dtype)[3]
        want = expected_reserve_bytes(sum(lengths), H, proj or H, D, proj, dtype)
        assert reserve.dtype == torch.uint8 and reserve.shape == (want,), (lengths, reserve.shape)


def test_training_backward_after_small_reserve_matches_nn_lstm():
    """A skewed batch (the case the reserve shrinks most for): every gradient against nn.LSTM
    over packed input, bidirectional, two layers, with a zero length."""
    torch.manual_seed(0)
    ref, fast = make_pair(3, 6, torch.float64, num_layers=2, bidirectional=True)
    T, lengths = 12, [12, 1, 0, 1, 2]
    x = torch.randn(T, len(lengths), 3, dtype=torch.float64)
    x_ref = x.clone().requires_grad_()
    x_fast = x.clone().requires_grad_()
    out_ref, h_ref, c_ref = reference_forward(ref, x_ref, lengths)
    out, (h, c) = fast(x_fast, lengths=torch.tensor(lengths))
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (out, h, c)]
    torch.autograd.backward([out_ref, h_ref, c_ref], grads)
    torch.autograd.backward([out, h, c], grads)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=1e-9, atol=1e-10)
    for (name, p_ref), p in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-9, atol=1e-10, msg=name)


def training_forward_workspace(T, lengths, H=64, I=16):
    """Peak allocation of one bidirectional training forward, minus its T x B outputs: the
    reserve and the op's own buffers."""
    torch.manual_seed(0)
    _, fast = make_pair(I, H, torch.float32, bidirectional=True)
    x = torch.randn(T, len(lengths), I)
    fast(x, lengths=lengths)  # warm up
    peak, (out, (h, c)) = peak_alloc_bytes(lambda: fast(x, lengths=lengths))
    return peak - sum(t.numel() * t.element_size() for t in (out, h, c))


def test_training_memory_follows_valid_tokens():
    """A skewed batch (one long sequence, the rest of length 1) against a dense one with the
    same valid tokens: about the same memory besides the outputs, where a reserve sized by the
    padded T x B (32x the valid tokens here, ~94 MiB) would dwarf the dense batch's."""
    T_long, B = 1000, 32
    skewed, dense, T_dense = skewed_and_dense(T_long, B)
    N = sum(skewed)
    ws_skewed = training_forward_workspace(T_long, skewed)
    ws_dense = training_forward_workspace(T_dense, dense)
    reserve = expected_reserve_bytes(N, 64, 64, 2, 0, torch.float32)
    print(f"  workspace: skewed {ws_skewed / 2**20:.2f} MiB, dense {ws_dense / 2**20:.2f} MiB, "
          f"reserve {reserve / 2**20:.2f} MiB")
    assert ws_dense >= reserve  # the measurement sees the reserve
    assert ws_skewed <= 1.5 * ws_dense + (1 << 20)


def test_padded_reserve_gives_the_same_gradients():
    """padded_reserve (what a torch.compile graph asks for) sizes the reserve by T x B; the
    backward reads either layout to the same gradients, and refuses any other size."""
    T, lengths, I, H = 7, [7, 2, 0, 5], 3, 4
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(s, generator=g, dtype=torch.float64)
               for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)] * 2]
    x = torch.randn(T, len(lengths), I, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, len(lengths), H, generator=g, dtype=torch.float64)
    c0 = torch.randn(2, len(lengths), H, generator=g, dtype=torch.float64)
    lens = torch.tensor(lengths)
    compact = FWD(x, lens, h0, c0, weights, True, False, True)
    padded = FWD(x, lens, h0, c0, weights, True, False, True, True)
    assert compact[3].numel() == expected_reserve_bytes(sum(lengths), H, H, 2, 0, x.dtype)
    assert padded[3].numel() == expected_reserve_bytes(T * len(lengths), H, H, 2, 0, x.dtype)
    for a, b in zip(compact[:3], padded[:3]):
        assert torch.equal(a, b)
    grads = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in compact[:3]]
    BWD = torch.ops.fastlstm.lstm_layer_backward.default
    from_compact = BWD(*grads, x, lens, h0, c0, weights, compact[3], True, False, True, True)
    from_padded = BWD(*grads, x, lens, h0, c0, weights, padded[3], True, False, True, True)
    for a, b in zip(from_compact[:3] + tuple(from_compact[3]),
                    from_padded[:3] + tuple(from_padded[3])):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"reserve.*valid tokens.*padded_reserve"):
        BWD(*grads, x, lens, h0, c0, weights, padded[3][:-64], True, False, True, True)


def test_vmap_over_examples_with_different_lengths():
    """torch.func.vmap of the raw ops over examples that each have their own lengths (so their
    compact reserves would differ in size): outputs and gradients against a loop over them."""
    E, T, B, I, H = 3, 6, 2, 3, 4
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(s, generator=g, dtype=torch.float64)
               for s in [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
    xs = torch.randn(E, T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.zeros(1, B, H, dtype=torch.float64)
    lens = torch.tensor([[6, 1], [2, 2], [0, 4]])
    BWD = torch.ops.fastlstm.lstm_layer_backward.default

    def forward(x, lengths):
        return FWD(x, lengths, h0, h0, weights, True, False, False)

    def backward(dy, x, lengths, reserve):
        return BWD(dy, None, None, x, lengths, h0, h0, weights, reserve, True, False, False, True)

    outs = torch.func.vmap(forward)(xs, lens)
    dys = torch.randn(outs[0].shape, generator=g, dtype=torch.float64)
    grads = torch.func.vmap(backward)(dys, xs, lens, outs[3])
    for e in range(E):
        want = forward(xs[e], lens[e])
        for got, exp in zip(outs[:3], want[:3]):
            torch.testing.assert_close(got[e], exp, rtol=0, atol=0)
        want_grads = backward(dys[e], xs[e], lens[e], want[3])
        for got, exp in zip(grads[:3] + tuple(grads[3]), want_grads[:3] + tuple(want_grads[3])):
            torch.testing.assert_close(got[e], exp, rtol=1e-12, atol=1e-12)
