"""The skewed batch of the issue "CPU inference that never loses", at full size: 99 sequences of
length 1 and one of length 5,000, bidirectional, H=128, inference (torch.inference_mode).

    python -m benchmarks.skewed [--steps 5000] [--batch 100] [--reps 3]

Contenders, interleaved, median time and peak resident memory (benchmarks/memory.py):
  fastlstm             fastlstm.LSTM(x, lengths=...) (the reserve-free op)
  fastlstm (reserve)   torch.ops.fastlstm.lstm_layer_forward, the training forward, whose
                       reserve for the backward holds one row per valid token
  nn.LSTM packed       pack_padded_sequence -> nn.LSTM -> pad_packed_sequence
"""

import argparse
import statistics
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm

from . import memory


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(args.input, args.hidden, bidirectional=True)
    fast = fastlstm.LSTM(args.input, args.hidden, bidirectional=True)
    fast.load_state_dict(ref.state_dict())
    lengths = torch.tensor([args.steps] + [1] * (args.batch - 1))
    x = torch.randn(args.steps, args.batch, args.input)
    h0 = torch.zeros(2, args.batch, args.hidden)

    def f_fast():
        return fast(x, lengths=lengths)

    def f_reserve():
        return torch.ops.fastlstm.lstm_layer_forward(x, lengths, h0, h0, fast._flat_weights,
                                                     True, False, True)[:3]

    def f_packed():
        out, hc = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(out, total_length=args.steps)[0], hc

    fns = {"fastlstm": f_fast, "fastlstm (reserve)": f_reserve, "nn.LSTM packed": f_packed}
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for f in fns.values():
            f()
        for _ in range(args.reps):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        peaks, why = memory.peaks(fns, torch.device("cpu"))
    print(f"T={args.steps} B={args.batch} H={args.hidden} I={args.input} bidirectional, "
          f"valid tokens {int(lengths.sum())}, torch threads {torch.get_num_threads()}, "
          f"reps {args.reps} (interleaved)")
    for k in fns:
        mem = f"{peaks[k]:8.1f} MiB" if peaks else f"n/a ({why})"
        print(f"  {k:20s} median {statistics.median(times[k]) * 1e3:9.1f} ms  "
              f"(min {min(times[k]) * 1e3:9.1f})  peak RSS {mem}")


if __name__ == "__main__":
    main()
