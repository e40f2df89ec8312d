"""The contenders: one training or inference step of each way to run an LSTM over a padded
batch with per-sequence lengths. Each builder returns a zero-argument callable that runs the
step and returns (output [T, B, D*H], h_n, c_n); for training it also runs the backward.

  fastlstm         fastlstm.LSTM(x, lengths=...).
  nn.LSTM padded   nn.LSTM straight on the padded batch. It computes the padding, and its h_n,
                   c_n and reverse direction are wrong for every sequence shorter than T: a speed
                   reference (the fused cuDNN / oneDNN path), not a correct alternative.
  nn.LSTM packed   pack_padded_sequence -> nn.LSTM -> pad_packed_sequence: the correct baseline.
  nn.LSTM bucketed the workaround users reach for: sort the batch by length, split it into
                   `buckets` groups of (nearly) equal size, run each group padded only to its
                   longest sequence, then put outputs and final states back in the original order.
                   Within a group of equal lengths it runs nn.LSTM on the plain padded tensor
                   (the fast path, exact there); otherwise it packs the group, so that h_n, c_n
                   and the reverse direction are right. Results equal the packed baseline.
"""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm


def setup(w, device, lengths, requires_grad, seed=0):
    """(nn.LSTM, fastlstm.LSTM, x): identical weights, and an input padded to the longest
    sequence, as a collate function pads."""
    torch.manual_seed(seed)
    kw = dict(bidirectional=w.bidirectional, device=device, dtype=w.torch_dtype)
    ref = torch.nn.LSTM(w.input_size, w.hidden_size, w.num_layers, **kw)
    fast = fastlstm.LSTM(w.input_size, w.hidden_size, w.num_layers, **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(int(lengths.max()), w.batch, w.input_size, device=device,
                    dtype=w.torch_dtype, requires_grad=requires_grad)
    return ref, fast, x


def _step(forward, x, params, backward):
    """Wraps a forward into one step. Training ends by setting the gradients to None, as
    optimizer.zero_grad() does after an update, so that no step starts with gradients held
    and every step allocates its own."""
    if not backward:
        return forward

    def run():
        out, h_n, c_n = forward()
        (out.float().square().mean() + h_n.float().square().mean()).backward()
        x.grad = None
        for p in params:
            p.grad = None
        return out, h_n, c_n
    return run


def fastlstm_step(ref, fast, x, lengths, backward, buckets):
    def forward():
        out, (h_n, c_n) = fast(x, lengths=lengths)
        return out, h_n, c_n
    return _step(forward, x, list(fast.parameters()), backward)


def nn_padded_step(ref, fast, x, lengths, backward, buckets):
    def forward():
        out, (h_n, c_n) = ref(x)
        return out, h_n, c_n
    return _step(forward, x, list(ref.parameters()), backward)


def nn_packed_step(ref, fast, x, lengths, backward, buckets):
    steps = x.shape[0]

    def forward():
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h_n, c_n) = ref(packed)
        out, _ = pad_packed_sequence(out, total_length=steps)
        return out, h_n, c_n
    return _step(forward, x, list(ref.parameters()), backward)


def nn_bucketed_step(ref, fast, x, lengths, backward, buckets):
    steps = x.shape[0]

    def forward():
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        order_dev = order.to(x.device, non_blocking=True)
        outs, hs, cs = [], [], []
        for idx, lens in zip(order_dev.chunk(buckets), sorted_lengths.chunk(buckets)):
            longest = int(lens[0])
            xb = x[:longest].index_select(1, idx)
            if int(lens[-1]) == longest:
                out, (h, c) = ref(xb)
            else:
                out, (h, c) = ref(pack_padded_sequence(xb, lens, enforce_sorted=True))
                out, _ = pad_packed_sequence(out, total_length=longest)
            outs.append(F.pad(out, (0, 0, 0, 0, 0, steps - longest)))
            hs.append(h)
            cs.append(c)
        # Back to the caller's order: position order[j] holds sorted row j.
        inverse = torch.empty_like(order_dev)
        inverse[order_dev] = torch.arange(len(order), device=x.device)
        return (torch.cat(outs, 1).index_select(1, inverse),
                torch.cat(hs, 1).index_select(1, inverse),
                torch.cat(cs, 1).index_select(1, inverse))
    return _step(forward, x, list(ref.parameters()), backward)


CONTENDERS = {
    "fastlstm": fastlstm_step,
    "nn.LSTM padded": nn_padded_step,
    "nn.LSTM packed": nn_packed_step,
    "nn.LSTM bucketed": nn_bucketed_step,
}
BASELINES = [name for name in CONTENDERS if name != "fastlstm"]


def steps(ref, fast, x, lengths, backward, buckets):
    """{name: step} for every contender over the same models and input."""
    return {name: make(ref, fast, x, lengths, backward, buckets)
            for name, make in CONTENDERS.items()}


def build(w, device, lengths, backward, buckets, seed=0):
    """{name: step} for every contender, over one input drawn for workload w."""
    ref, fast, x = setup(w, device, lengths, backward, seed)
    return steps(ref, fast, x, lengths, backward, buckets)
