"""Converting an existing nn.LSTM model with fastlstm.convert, and comparing its speed.

`Classifier` is written for nn.LSTM: it packs the padded batch and runs the LSTM on it.
`fastlstm.convert(model)` swaps its nn.LSTM for a fastlstm.LSTM in place (same parameters),
and the model's one-line `isinstance` branch then passes the padded batch with `lengths=`
instead of packing. The example checks that the outputs and the gradients are unchanged and
prints the time of a training step (forward + backward) before and after.

    python examples/convert_speed.py            # a few seconds on a CPU
"""

import argparse
import copy
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastlstm


class Classifier(nn.Module):
    def __init__(self, vocab=1000, embed=64, hidden=128, classes=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids, lengths):
        x = self.embed(ids)
        if isinstance(self.lstm, fastlstm.LSTM):     # after fastlstm.convert: no packing
            _, (h, _) = self.lstm(x, lengths=lengths)
        else:                                        # nn.LSTM: pack, then run
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
        return self.head(torch.cat([h[-2], h[-1]], 1))   # last layer, both directions


def make_batch(batch, T, vocab, gen):
    lengths = torch.randint(1, T + 1, (batch,), generator=gen)
    ids = torch.randint(1, vocab, (batch, T), generator=gen)
    ids = ids.masked_fill(torch.arange(T)[None, :] >= lengths[:, None], 0)
    return ids, lengths


def step_time(model, ids, lengths, reps):
    """Median seconds of forward + backward."""
    times = []
    for _ in range(reps + 1):                         # the first is a warm-up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(ids, lengths).logsumexp(1).sum().backward()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[reps // 2]


def main(batch=32, T=100, hidden=128, reps=5, seed=0, verbose=True):
    """Returns the largest output and gradient differences and both step times."""
    torch.manual_seed(seed)
    model = Classifier(hidden=hidden)
    original = copy.deepcopy(model)                   # kept to compare with
    ids, lengths = make_batch(batch, T, 1000, torch.Generator().manual_seed(seed))

    fastlstm.convert(model)                           # the whole change
    assert type(model.lstm) is fastlstm.LSTM

    def outputs_and_grads(m):
        m.zero_grad(set_to_none=True)
        logits = m(ids, lengths)
        logits.logsumexp(1).sum().backward()
        return logits.detach(), {n: p.grad for n, p in m.named_parameters()}

    want, want_grads = outputs_and_grads(original)
    got, got_grads = outputs_and_grads(model)
    output_diff = (got - want).abs().max().item()
    grad_diff = max(((got_grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item()
                    for n, g in want_grads.items())

    t_nn = step_time(original, ids, lengths, reps)
    t_fast = step_time(model, ids, lengths, reps)
    if verbose:
        print(f"batch {batch}, T {T} (lengths 1..{T}), hidden {hidden}, bidirectional, "
              f"2 layers, float32, threads: {torch.get_num_threads()}")
        print(f"  max |logits diff| {output_diff:.1e}, max relative gradient diff "
              f"{grad_diff:.1e}")
        print(f"  training step, nn.LSTM (packed):      {t_nn * 1e3:8.1f} ms")
        print(f"  training step, converted to fastlstm: {t_fast * 1e3:8.1f} ms "
              f"({t_nn / t_fast:.2f}x)")
    return {"output_diff": output_diff, "grad_diff": grad_diff, "nn_lstm_s": t_nn,
            "fastlstm_s": t_fast}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, for both contenders (default 1: on a busy "
                             "machine OpenMP's waiting threads slow 2+ threads down a lot)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(batch=args.batch, T=args.T, hidden=args.hidden, reps=args.reps)
