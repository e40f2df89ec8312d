"""A bidirectional tagger: one label per token, over sentences of different lengths.

Synthetic task: sentences of 2 to `max_len` tokens (ids 1..19, 0 is padding, as Keras's
`mask_zero`). The label of a token is 1 when the token before it is smaller than the token
after it (outside the sentence counts as 0), else 0. Each label needs both the left and the
right context, and the last token's right context is the sentence's own end: exactly what
fastlstm's reverse direction gets right on a padded batch (it starts at each sentence's end,
not in the padding).

The lengths come from the padded ids with `fastlstm.lengths_from_padding` (the padding id
plays the role of Keras's mask_zero); no packing is needed.

    python examples/tagger.py            # trains in well under a minute on a CPU
"""

import argparse
import time

import torch
from torch import nn

import fastlstm

VOCAB = 20   # ids 1..19 are tokens, 0 is padding


def make_batch(batch_size, max_len, gen):
    lengths = torch.randint(2, max_len + 1, (batch_size,), generator=gen)
    ids = torch.randint(1, VOCAB, (batch_size, max_len), generator=gen)
    valid = torch.arange(max_len)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~valid, 0)
    zero = torch.zeros(batch_size, 1, dtype=ids.dtype)
    before = torch.cat([zero, ids[:, :-1]], 1)     # 0 before the first token
    after = torch.cat([ids[:, 1:], zero], 1)       # 0 after the last one (the padding is 0)
    labels = (before < after).long().masked_fill(~valid, -100)   # -100: ignored by the loss
    return ids, labels


class Tagger(nn.Module):
    def __init__(self, embed=16, hidden=32, tags=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, embed, padding_idx=0)
        self.lstm = fastlstm.LSTM(embed, hidden, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, tags)

    def forward(self, ids):
        lengths = fastlstm.lengths_from_padding(ids, padding_idx=0)
        out, _ = self.lstm(self.embed(ids), lengths=lengths)   # [B, T, 2H], 0 past each end
        return self.out(out)                                   # [B, T, tags]


def accuracy(model, ids, labels):
    with torch.no_grad():
        pred = model(ids).argmax(-1)
    valid = labels != -100
    return (pred[valid] == labels[valid]).float().mean().item()


def main(steps=400, batch_size=32, max_len=20, hidden=32, lr=1e-2, seed=0, verbose=True):
    """Trains the tagger; returns the held-out token accuracy, the accuracy of always
    answering the majority tag, and the training time."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Tagger(hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    test_ids, test_labels = make_batch(512, max_len, torch.Generator().manual_seed(seed + 1))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        ids, labels = make_batch(batch_size, max_len, gen)
        loss = loss_fn(model(ids).flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step % 100 == 0 or step == steps):
            print(f"step {step:4d}  loss {loss.item():.3f}  "
                  f"held-out accuracy {accuracy(model, test_ids, test_labels):.3f}")
    ones = (test_labels == 1).sum() / (test_labels != -100).sum()
    result = {"accuracy": accuracy(model, test_ids, test_labels),
              "majority_baseline": max(ones.item(), 1 - ones.item()),
              "seconds": time.perf_counter() - start}
    if verbose:
        print(f"token accuracy {result['accuracy']:.3f} (always the majority tag: "
              f"{result['majority_baseline']:.3f}) after {steps} steps, "
              f"{result['seconds']:.1f} s")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: as fast for a model this small, and "
                             "OpenMP's waiting threads slow 2+ threads down a lot on a busy "
                             "machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    main(steps=args.steps, batch_size=args.batch_size, hidden=args.hidden)
