"""Lengths helpers: from a mask, from padding token ids, from a list of unequal tensors.

Lengths are checked against the ones the data was built from, and the helpers' output fed
to fastlstm.LSTM is checked against nn.LSTM over pack_sequence of the unpadded tensors."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fastlstm
from helpers import assert_close, make_pair, reference_forward

LENGTHS = [5, 0, 3, 1, 5, 2]
T = 5


def prefix_mask(lengths, steps):
    return torch.arange(steps)[None, :] < torch.tensor(lengths)[:, None]   # [B, T]


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int32, torch.uint8])
def test_lengths_from_mask(dtype):
    mask = prefix_mask(LENGTHS, T).to(dtype)
    got = fastlstm.lengths_from_mask(mask)
    assert got.dtype == torch.int64 and got.tolist() == LENGTHS
    assert fastlstm.lengths_from_mask(mask.t(), batch_first=False).tolist() == LENGTHS
    # As Keras and numpy users have it.
    assert fastlstm.lengths_from_mask(mask.numpy()).tolist() == LENGTHS
    assert fastlstm.lengths_from_mask(mask[2]).tolist() == [3]        # unbatched [T]
    assert fastlstm.lengths_from_mask(torch.ones(2, 0, dtype=dtype)).tolist() == [0, 0]


def test_lengths_from_padding():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (len(LENGTHS), T), generator=gen)
    ids[~prefix_mask(LENGTHS, T)] = 0
    assert fastlstm.lengths_from_padding(ids).tolist() == LENGTHS      # mask_zero
    assert fastlstm.lengths_from_padding(ids.t(), batch_first=False).tolist() == LENGTHS
    ids7 = ids.masked_fill(ids == 0, 7).masked_fill(ids == 7, 8)
    assert fastlstm.lengths_from_padding(ids7, padding_idx=7).tolist() == LENGTHS
    assert fastlstm.lengths_from_padding(np.array([[3, 4, 0, 0]])).tolist() == [2]
    assert fastlstm.lengths_from_padding(torch.tensor([3, 0, 0])).tolist() == [1]


@pytest.mark.parametrize("batch_first", [True, False])
def test_pad_with_lengths(batch_first):
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in LENGTHS]
    padded, lengths = fastlstm.pad_with_lengths(seqs, batch_first=batch_first)
    assert lengths.tolist() == LENGTHS and lengths.dtype == torch.int64
    assert lengths.device.type == "cpu"
    assert padded.shape == ((6, T, 3) if batch_first else (T, 6, 3))
    rows = padded if batch_first else padded.transpose(0, 1)
    for b, s in enumerate(seqs):
        assert torch.equal(rows[b, :len(s)], s)
        assert torch.all(rows[b, len(s):] == 0)
    padded9, _ = fastlstm.pad_with_lengths(seqs, padding_value=-1.0, total_length=9)
    assert padded9.shape == (6, 9, 3) and torch.all(padded9[0, 5:] == -1)
    ids, id_lengths = fastlstm.pad_with_lengths([[4, 5, 6], [7], []])   # token id lists
    assert ids.tolist() == [[4, 5, 6], [7, 0, 0], [0, 0, 0]] and id_lengths.tolist() == [3, 1, 0]
    empty, empty_lengths = fastlstm.pad_with_lengths([torch.zeros(0, 3)])
    assert empty.shape == (1, 0, 3) and empty_lengths.tolist() == [0]


def test_helpers_feed_fastlstm_like_packed_nn_lstm():
    """pad_with_lengths -> fastlstm.LSTM equals nn.LSTM on pack_sequence of the same list."""
    ref, fast = make_pair(3, 4, bidirectional=True, batch_first=True)
    gen = torch.Generator().manual_seed(2)
    lengths = [4, 1, 6, 3]
    seqs = [torch.randn(n, 3, generator=gen, dtype=torch.float64) for n in lengths]
    padded, got_lengths = fastlstm.pad_with_lengths(seqs)
    out, (h, c) = fast(padded, lengths=got_lengths)
    packed_out, (h_ref, c_ref) = ref(pack_sequence(seqs, enforce_sorted=False))
    want, _ = pad_packed_sequence(packed_out, batch_first=True)
    assert_close("output", out, want)
    assert_close("h_n", h, h_ref)
    assert_close("c_n", c, c_ref)
    # The same through the mask and the padding-id helpers, from the padded batch.
    mask_lengths = fastlstm.lengths_from_mask(padded.abs().sum(-1) != 0)
    assert mask_lengths.tolist() == lengths
    out_m, (h_m, _) = fast(padded, lengths=mask_lengths)
    assert torch.equal(out_m, out) and torch.equal(h_m, h)
    w_out, w_h, _ = reference_forward(ref, padded, lengths)
    assert_close("output (padded ref)", out_m, w_out)
    assert_close("h_n (padded ref)", h_m, w_h)


def test_mask_with_holes_names_row_and_position():
    mask = prefix_mask(LENGTHS, T)
    mask[3, 4] = True                                    # row 3: T F F F T
    with pytest.raises(ValueError) as info:
        fastlstm.lengths_from_mask(mask)
    msg = str(info.value)
    assert msg.startswith("mask must be True on a prefix of each sequence and False after it")
    assert "got mask[3, 4] = True after mask[3, 1] = False, in sequence 3" in msg
    with pytest.raises(ValueError, match=r"got mask\[4, 3\] = True after mask\[1, 3\] = False, "
                                         r"in sequence 3"):
        fastlstm.lengths_from_mask(mask.t(), batch_first=False)
    with pytest.raises(ValueError, match=r"got mask\[2\] = True after mask\[0\] = False"):
        fastlstm.lengths_from_mask(torch.tensor([False, False, True]))
    # Left padding (Keras's pad_sequences default) is a mask with holes; the message says so.
    with pytest.raises(ValueError, match=r"got mask\[0, 2\] = True after mask\[0, 0\] = "
                                         r"False.*padding='pre'"):
        fastlstm.lengths_from_mask(torch.tensor([[0, 0, 1, 1]]))
    # check=False skips the check: the count of True per row.
    assert fastlstm.lengths_from_mask(mask, check=False).tolist() == [5, 0, 3, 2, 5, 2]


def test_padding_with_holes_names_row_and_position():
    ids = torch.tensor([[5, 6, 7, 0], [8, 0, 9, 0], [1, 1, 0, 0]])
    with pytest.raises(ValueError) as info:
        fastlstm.lengths_from_padding(ids)
    msg = str(info.value)
    assert msg.startswith("ids must hold padding (padding_idx=0) only at the end of each "
                          "sequence")
    assert "got ids[1, 2] = 9 after ids[1, 1] = 0 (padding), in sequence 1" in msg
    with pytest.raises(ValueError, match=r"padding_idx=5.*got ids\[0, 1\] = 6 after "
                                         r"ids\[0, 0\] = 5 \(padding\), in sequence 0"):
        fastlstm.lengths_from_padding(ids, padding_idx=5)


def test_bad_arguments():
    with pytest.raises(TypeError, match="mask must be a bool tensor .* got dtype torch.float32"):
        fastlstm.lengths_from_mask(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1 .* got mask\[1, 2\] = 2"):
        fastlstm.lengths_from_mask(torch.tensor([[1, 1, 0], [1, 1, 2]]))
    with pytest.raises(ValueError, match=r"mask must be 2-D \[B, T\] \(batch_first=True\) or "
                                         r"1-D \[T\], got 3-D with shape \(1, 2, 3\)"):
        fastlstm.lengths_from_mask(torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="ids must be an integer tensor of token ids, got dtype "
                                        "torch.float32"):
        fastlstm.lengths_from_padding(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="padding_idx must be an int, got 0.5"):
        fastlstm.lengths_from_padding(torch.zeros(2, 3, dtype=torch.long), padding_idx=0.5)
    with pytest.raises(ValueError, match=r"sequences\[1\] must have the trailing shape \(3,\) "
                                         r"of sequences\[0\] \(shape \[L, \*\]\), got shape "
                                         r"\(2, 4\)"):
        fastlstm.pad_with_lengths([torch.ones(2, 3), torch.ones(2, 4)])
    with pytest.raises(TypeError, match=r"sequences\[1\] must have the dtype torch.float32 of "
                                        r"sequences\[0\], got torch.float64"):
        fastlstm.pad_with_lengths([torch.ones(2), torch.ones(2, dtype=torch.float64)])
    with pytest.raises(ValueError, match=r"sequences\[0\] must have a time dimension"):
        fastlstm.pad_with_lengths([torch.tensor(1.0)])
    with pytest.raises(ValueError, match="sequences must hold at least one sequence"):
        fastlstm.pad_with_lengths([])
    with pytest.raises(TypeError, match="sequences must be a list or tuple of tensors, got "
                                        "Tensor"):
        fastlstm.pad_with_lengths(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"total_length must be an int >= the longest sequence "
                                         r"\(3\), got 2"):
        fastlstm.pad_with_lengths([torch.ones(3)], total_length=2)


def test_embedding_mask_zero_round_trip():
    """Keras-style: Embedding(padding_idx=0) + lengths from the ids == packed nn.LSTM."""
    torch.manual_seed(0)
    emb = nn.Embedding(20, 3, padding_idx=0, dtype=torch.float64)
    ref, fast = make_pair(3, 4, batch_first=True)
    ids = torch.tensor([[3, 9, 4, 0, 0], [7, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
    lengths = fastlstm.lengths_from_padding(ids)
    x = emb(ids)
    out, (h, _) = fast(x, lengths=lengths)
    want, want_h, _ = reference_forward(ref, x, [3, 1, 5])
    assert_close("output", out, want)
    assert_close("h_n", h, want_h)


def test_padding_mask_passed_by_mistake():
    """nn.Transformer's key_padding_mask is True at padding: the inverse. It is caught (a
    suffix mask has holes) and the message says how to fix it."""
    key_padding_mask = ~prefix_mask([5, 3, 2], T)
    with pytest.raises(ValueError, match=r"got mask\[1, 3\] = True after mask\[1, 0\] = False"
                                         r".*key_padding_mask\) must be inverted \(~mask\)"):
        fastlstm.lengths_from_mask(key_padding_mask)
    assert fastlstm.lengths_from_mask(~key_padding_mask).tolist() == [5, 3, 2]
