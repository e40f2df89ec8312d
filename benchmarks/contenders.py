"""The contenders: one step (forward, or forward+backward) of each way to run an LSTM over a
padded batch with per-sequence lengths. Each builder returns a zero-argument callable."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm


def make_models(w, device, dtype):
    """(nn.LSTM, fastlstm.LSTM) with identical weights."""
    ref = torch.nn.LSTM(w.input_size, w.hidden_size, w.num_layers,
                        bidirectional=w.bidirectional, device=device, dtype=dtype)
    fast = fastlstm.LSTM(w.input_size, w.hidden_size, w.num_layers,
                         bidirectional=w.bidirectional, device=device, dtype=dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _finish(out, h_n, backward):
    if backward:
        (out.float().square().mean() + h_n.float().square().mean()).backward()


def fastlstm_step(ref, fast, x, lengths, backward):
    def run():
        out, (h_n, _) = fast(x, lengths=lengths)
        _finish(out, h_n, backward)
    return run


def nn_padded_step(ref, fast, x, lengths, backward):
    """nn.LSTM straight on the padded batch: computes the padding, and its h_n is wrong for
    every sequence shorter than T. The baseline users get when they ignore lengths."""
    def run():
        out, (h_n, _) = ref(x)
        _finish(out, h_n, backward)
    return run


def nn_packed_step(ref, fast, x, lengths, backward):
    """nn.LSTM through pack_padded_sequence / pad_packed_sequence: the correct baseline."""
    steps = x.shape[0]

    def run():
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h_n, _) = ref(packed)
        out, _ = pad_packed_sequence(out, total_length=steps)
        _finish(out, h_n, backward)
    return run


CONTENDERS = {
    "fastlstm": fastlstm_step,
    "nn.LSTM padded": nn_padded_step,
    "nn.LSTM packed": nn_packed_step,
}
