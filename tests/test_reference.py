"""fastlstm/reference.py (a plain-PyTorch masked LSTM) against nn.LSTM over packed sequences,
forward and backward, through the same harness as fastlstm (helpers.check_parity): zero
lengths, projections, no bias, batch_first, NaN / Inf in the padding."""

import math

import pytest
import torch
from torch import nn

from fastlstm.reference import lstm_reference
from helpers import check_parity, make_pair, padding_mask, random_lengths

F64 = torch.float64


class ReferenceLSTM(nn.LSTM):
    """nn.LSTM's parameters, run through fastlstm.reference.lstm_reference."""

    def forward(self, input, hx=None, lengths=None):
        x = input.transpose(0, 1) if self.batch_first else input
        T, B = x.shape[:2]
        D = 2 if self.bidirectional else 1
        hout = self.proj_size or self.hidden_size
        if hx is None:
            hx = (x.new_zeros(self.num_layers * D, B, hout),
                  x.new_zeros(self.num_layers * D, B, self.hidden_size))
        lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
        out, h_n, c_n = lstm_reference(x, lengths, hx[0], hx[1], self._flat_weights,
                                       self.num_layers, self.bias, self.bidirectional,
                                       self.proj_size > 0)
        return (out.transpose(0, 1) if self.batch_first else out), (h_n, c_n)


def make_reference_pair(I, H, seed=0, **kwargs):
    ref, _ = make_pair(I, H, F64, seed=seed, **kwargs)
    candidate = ReferenceLSTM(I, H, dtype=F64, **kwargs)
    candidate.load_state_dict(ref.state_dict())
    return ref, candidate


def make_hx(ref, B, seed=1):
    gen = torch.Generator().manual_seed(seed)
    D = 2 if ref.bidirectional else 1
    return (torch.randn(ref.num_layers * D, B, ref.proj_size or ref.hidden_size, generator=gen,
                        dtype=F64),
            torch.randn(ref.num_layers * D, B, ref.hidden_size, generator=gen, dtype=F64))


@pytest.mark.parametrize("cfg", [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, bidirectional=True, proj_size=2),
    dict(num_layers=3, bias=False, batch_first=True),
    dict(num_layers=1, bidirectional=True, batch_first=True, proj_size=3),
], ids=["uni1", "bi2", "bi2_proj", "uni3_nobias_bf", "bi1_bf_proj"])
@pytest.mark.parametrize("kind", ["random", "has_zero", "all_zero"])
def test_reference_matches_nn_lstm(cfg, kind):
    T, B, I, H = 6, 5, 3, 4
    gen = torch.Generator().manual_seed(11)
    lengths = random_lengths(kind, B, T, gen)
    ref, candidate = make_reference_pair(I, H, **cfg)
    shape = (B, T, I) if cfg.get("batch_first") else (T, B, I)
    x = torch.randn(*shape, generator=gen, dtype=F64)
    check_parity(ref, candidate, x, lengths, make_hx(ref, B))


def test_reference_without_hx_and_nan_padding():
    T, B, I, H = 7, 4, 3, 4
    lengths = [7, 0, 3, 1]
    ref, candidate = make_reference_pair(I, H, num_layers=2, bidirectional=True)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, I, generator=gen, dtype=F64)
    pad = padding_mask(lengths, T, batch_first=False)
    x[pad] = math.nan
    x[pad & pad.roll(1, 0)] = math.inf
    check_parity(ref, candidate, x, lengths, None)


def test_harness_rejects_a_wrong_reference():
    """The comparison can fail: a reference with f and i swapped does."""
    ref, candidate = make_reference_pair(3, 4, num_layers=1)
    with torch.no_grad():
        w = candidate.weight_ih_l0
        w.copy_(torch.cat([w[4:8], w[0:4], w[8:]]))
    with pytest.raises(AssertionError):
        check_parity(ref, candidate, torch.randn(5, 3, 3, dtype=F64), [5, 2, 4],
                     make_hx(ref, 3))
