"""Chunked training: truncated backpropagation through time (TBPTT) over long sequences.

A long padded batch is fed to the LSTM in chunks of `chunk` steps, with (h, c) carried from
one call to the next. Each sequence keeps its own length: in the chunk that starts at step s,
its length is clamp(length - s, 0, chunk). A sequence that has already ended gets length 0
in the later chunks, and fastlstm passes its (h, c) through unchanged (outputs 0), so the
carried state of every sequence stays its state at its own last step. nn.LSTM cannot do this
(packing rejects zero lengths).

The example shows, then uses, that:

1. chunked forward == one pass: the outputs, concatenated, and the final (h, c) equal those
   of a single call on the whole batch;
2. without detaching (h, c) between chunks, the gradients equal those of one pass too;
3. TBPTT proper (detach between chunks, one optimizer step per chunk) trains a model on a
   task whose memory crosses chunk boundaries: output the input from `delay` steps ago.

    python examples/chunked_training.py
"""

import argparse
import time

import torch
from torch import nn

import fastlstm


def chunk_lengths(lengths, start, size):
    """Per-sequence lengths inside the chunk [start, start + size)."""
    return (lengths - start).clamp(0, size)


def run_chunked(lstm, x, lengths, chunk, hx=None, detach=False):
    """lstm over x [B, T, I] (batch_first) in chunks of `chunk` steps, carrying (h, c).
    Returns (output [B, T, D*H], (h_n, c_n)), as one call lstm(x, hx, lengths=lengths) does."""
    outputs, state = [], hx
    for start in range(0, x.shape[1], chunk):
        piece = x[:, start:start + chunk]
        out, state = lstm(piece, state, lengths=chunk_lengths(lengths, start, piece.shape[1]))
        if detach:
            state = (state[0].detach(), state[1].detach())
        outputs.append(out)
    return torch.cat(outputs, 1), state


def check_chunked_equals_one_pass(T=240, chunk=50, batch=6, seed=0, verbose=True):
    """Parts 1 and 2, in float64. Returns the largest differences found."""
    torch.manual_seed(seed)
    lstm = fastlstm.LSTM(3, 16, num_layers=2, batch_first=True, dtype=torch.float64)
    x = torch.randn(batch, T, 3, dtype=torch.float64)
    # Lengths that end inside, at the edge of, and before the last chunk; one is empty.
    lengths = torch.tensor([T, T - 7, chunk, chunk + 1, 13, 0])[:batch]
    hx = (torch.randn(2, batch, 16, dtype=torch.float64),
          torch.randn(2, batch, 16, dtype=torch.float64))

    def loss_of(out, state):   # a loss on everything: outputs and the final state
        return out.sin().sum() + state[0].sum() + (state[1] ** 2).sum()

    lstm.zero_grad()
    out_one, state_one = lstm(x, hx, lengths=lengths)
    loss_of(out_one, state_one).backward()
    grads_one = [p.grad.clone() for p in lstm.parameters()]

    lstm.zero_grad()
    out_chunked, state_chunked = run_chunked(lstm, x, lengths, chunk, hx)   # no detach
    loss_of(out_chunked, state_chunked).backward()
    grads_chunked = [p.grad.clone() for p in lstm.parameters()]

    diffs = {
        "output": (out_chunked - out_one).abs().max().item(),
        "h_n": (state_chunked[0] - state_one[0]).abs().max().item(),
        "c_n": (state_chunked[1] - state_one[1]).abs().max().item(),
        "grads": max((a - b).abs().max().item() for a, b in zip(grads_chunked, grads_one)),
    }
    if verbose:
        print(f"T={T} in chunks of {chunk}, lengths {lengths.tolist()}: chunked vs one pass, "
              f"max |diff| " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    return diffs


def delay_batch(batch, T, delay, gen):
    lengths = torch.randint(T // 2, T + 1, (batch,), generator=gen)
    x = torch.randint(0, 2, (batch, T, 1), generator=gen).float() * 2 - 1   # +-1
    target = torch.zeros_like(x)
    target[:, delay:] = x[:, :-delay]
    return x, lengths, target


class DelayNet(nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.lstm = fastlstm.LSTM(1, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)


def train_tbptt(steps=40, batch=16, T=300, chunk=50, delay=4, hidden=32, lr=1e-2, seed=0,
                verbose=True):
    """Part 3: TBPTT. Returns the mean squared error on held-out sequences, before and after
    training (predicting 0 everywhere scores 1.0)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = DelayNet(hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    test = delay_batch(64, T, delay, torch.Generator().manual_seed(seed + 1))

    def chunk_loss(x, lengths, target, start, state):
        piece = x[:, start:start + chunk]
        n = chunk_lengths(lengths, start, piece.shape[1])
        out, state = net.lstm(piece, state, lengths=n)
        valid = torch.arange(piece.shape[1])[None, :] < n[:, None]
        err = (net.out(out) - target[:, start:start + chunk]) ** 2
        return err[valid].sum(), valid.sum(), state

    def evaluate():
        with torch.no_grad():
            x, lengths, target = test
            total, count, state = 0.0, 0, None
            for start in range(0, T, chunk):
                err, n, state = chunk_loss(x, lengths, target, start, state)
                total, count = total + err.item(), count + n.item()
        return total / count

    before = evaluate()
    for step in range(1, steps + 1):
        x, lengths, target = delay_batch(batch, T, delay, gen)
        state = None
        for start in range(0, int(lengths.max()), chunk):
            err, n, state = chunk_loss(x, lengths, target, start, state)
            opt.zero_grad()
            (err / n).backward()
            opt.step()
            state = (state[0].detach(), state[1].detach())   # truncate: no gradient across
        if verbose and (step % 10 == 0 or step == steps):
            print(f"sequences {step * batch:5d}  held-out MSE {evaluate():.4f}")
    after = evaluate()
    if verbose:
        print(f"TBPTT, chunks of {chunk} over T={T}, delay {delay}: held-out MSE "
              f"{before:.3f} -> {after:.4f} (predicting 0 scores 1.0)")
    return before, after


def main(T=240, chunk=50, steps=40, train_T=300, verbose=True):
    start = time.perf_counter()
    diffs = check_chunked_equals_one_pass(T=T, chunk=chunk, verbose=verbose)
    before, after = train_tbptt(steps=steps, T=train_T, chunk=chunk, verbose=verbose)
    result = {"diffs": diffs, "mse_before": before, "mse_after": after,
              "seconds": time.perf_counter() - start}
    if verbose:
        print(f"{result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: as fast for a model this small, and "
                             "OpenMP's waiting threads slow 2+ threads down a lot on a busy "
                             "machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(chunk=args.chunk, steps=args.steps)
