"""fastlstm against nn.LSTM (padded and packed input) on an idle CPU and on one shared with busy
processes: how each degrades when the machine is oversubscribed (data-loader workers, several
models or jobs on one host).

    python -m benchmarks.oversubscribed [--mode forward|train] [--busy 1] [--reps 15] [--threads N]

Each contender runs with torch's threads as configured. For each load (idle, then --busy
processes spinning on the CPU), the contenders run interleaved, --reps times; the table gives
the median time, each contender's slowdown under load, and fastlstm's speedup in both.
OpenMP's wait matters to every contender: compare with GOMP_SPINCOUNT=30000 (libgomp's idle
workers spin for a tenth of the default) or OMP_WAIT_POLICY=PASSIVE set in the environment.
"""

import argparse
import multiprocessing as mp
import statistics
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm


def _spin(stop):
    while not stop.is_set():
        for _ in range(100_000):
            pass


def contenders(T, B, I, H, mode):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H, bidirectional=True)
    fast = fastlstm.LSTM(I, H, bidirectional=True)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=mode == "train")
    lengths = torch.randint(T // 4, T + 1, (B,))
    lengths[0] = T

    def packed():
        out = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))[0]
        return pad_packed_sequence(out, total_length=T)[0]

    return {"fastlstm": lambda: fast(x, lengths=lengths)[0], "nn.LSTM padded": lambda: ref(x)[0],
            "nn.LSTM packed": packed}


def timed(fn, mode):
    t0 = time.perf_counter()
    if mode == "train":
        fn().sum().backward()
    else:
        with torch.no_grad():
            fn()
    return time.perf_counter() - t0


def medians(fns, mode, reps):
    for fn in fns.values():
        timed(fn, mode)  # warm-up
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(timed(fn, mode))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["forward", "train"], default="train")
    p.add_argument("--busy", type=int, default=1, help="busy processes beside the contenders")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--shape", type=int, nargs=4, default=[64, 32, 128, 128],
                   metavar=("T", "B", "I", "H"))
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: as is)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    fns = contenders(*args.shape, args.mode)
    idle = medians(fns, args.mode, args.reps)
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        time.sleep(0.5)
        busy = medians(fns, args.mode, args.reps)
    finally:
        stop.set()
        for s in spinners:
            s.join()
    T, B, I, H = args.shape
    print(f"{args.mode}, bidirectional T={T} B={B} I={I} H={H}, torch threads "
          f"{torch.get_num_threads()}, {args.busy} busy process(es) beside, median of "
          f"{args.reps} interleaved reps")
    print(f"  {'contender':16s} {'idle ms':>9s} {'busy ms':>9s} {'slowdown':>9s}")
    for name in fns:
        print(f"  {name:16s} {idle[name] * 1e3:9.2f} {busy[name] * 1e3:9.2f} "
              f"{busy[name] / idle[name]:8.2f}x")
    for name in list(fns)[1:]:
        print(f"  fastlstm vs {name}: idle {idle[name] / idle['fastlstm']:.2f}x, "
              f"busy {busy[name] / busy['fastlstm']:.2f}x")
    return idle, busy


if __name__ == "__main__":
    main()
