"""fastlstm against nn.LSTM (padded and packed input) on an idle CPU and on one shared with busy
processes (data-loader workers, several models or jobs on one host): how each degrades.

    python -m benchmarks.oversubscribed [--busy 1 2] [--reps 9] [--out DIR] [--update-readme]

The grid: unidirectional and bidirectional, B = 8 and 32, H = 128 and 256 (I = H), T = 100
with lengths uniform in [T/4, T] (one full), inference (torch.inference_mode) and training
(forward and backward), torch's threads as configured. For each load (idle, then beside each
--busy count of processes spinning in Python loops), every row runs its contenders
interleaved (benchmarks/timing.py), --reps times; tables give the medians and fastlstm's
speed-up over each nn.LSTM contender under each load. Writes <tag>_oversubscribed.json and .md
to --out (benchmarks/results) and, with --update-readme, the README's block.
"""

import argparse
import multiprocessing as mp
import os
import sys
import time

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastlstm

from . import readme, report
from .timing import median, time_interleaved

HERE = os.path.dirname(os.path.abspath(__file__))
START, END = "<!-- oversubscribed-table -->", "<!-- /oversubscribed-table -->"
CONTENDERS = ("fastlstm", "nn.LSTM padded", "nn.LSTM packed")
MODES = ("inference", "train")


def grid():
    """[(name, dict(T, B, I, H, bidirectional))] of the default rows."""
    rows = []
    for bidirectional in (False, True):
        for B in (8, 32):
            for H in (128, 256):
                name = f"{'bi' if bidirectional else 'uni'} B={B} H={H}"
                rows.append((name, dict(T=100, B=B, I=H, H=H, bidirectional=bidirectional)))
    return rows


def _spin(stop):
    while not stop.is_set():
        for _ in range(100_000):
            pass


def contenders(T, B, I, H, bidirectional, mode, seed=0):
    """{name: fn} for one row: each call runs the forward (and backward when training)."""
    torch.manual_seed(seed)
    ref = torch.nn.LSTM(I, H, bidirectional=bidirectional)
    fast = fastlstm.LSTM(I, H, bidirectional=bidirectional)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, requires_grad=mode == "train")
    lengths = torch.randint(max(1, T // 4), T + 1, (B,))
    lengths[0] = T

    def packed():
        out = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))[0]
        return pad_packed_sequence(out, total_length=T)[0]

    forwards = {"fastlstm": lambda: fast(x, lengths=lengths)[0],
                "nn.LSTM padded": lambda: ref(x)[0], "nn.LSTM packed": packed}

    def as_job(fn):
        if mode == "train":
            return lambda: fn().sum().backward()

        def infer():
            with torch.inference_mode():
                fn()
        return infer

    return {name: as_job(fn) for name, fn in forwards.items()}


def measure(rows, loads, reps):
    """{(row, mode, busy): {contender: [ms]}} for every row and mode under each load."""
    samples = {}
    jobs = [(name, shape, mode) for name, shape in rows for mode in MODES]
    prepared = {(name, mode): contenders(**shape, mode=mode) for name, shape, mode in jobs}
    for busy in loads:
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)]
        for s in spinners:
            s.start()
        try:
            if busy:
                time.sleep(0.5)
            for name, _, mode in jobs:
                samples[(name, mode, busy)] = time_interleaved(
                    prepared[(name, mode)], torch.device("cpu"), warmup=1, reps=reps)
                print(f"  {name:16s} {mode:9s} beside {busy} busy: " + ", ".join(
                    f"{c} {median(samples[(name, mode, busy)][c]):.2f} ms" for c in CONTENDERS),
                    file=sys.stderr, flush=True)
        finally:
            stop.set()
            for s in spinners:
                s.join()
    return samples


def markdown(payload):
    """The table: per row and mode, fastlstm's median ms and its speed-up over nn.LSTM padded
    and packed, idle and beside each busy count."""
    loads = payload["run"]["loads"]
    label = lambda b: "idle" if b == 0 else f"{b} busy"  # noqa: E731
    head = ["row", "mode"] + [f"{label(b)}: fastlstm ms, vs padded, vs packed" for b in loads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(loads)]
    for r in payload["results"]:
        cells = [r["row"], r["mode"]]
        for b in loads:
            m = r["median_ms"][str(b)]
            cells.append(f"{m['fastlstm']:.2f}, {m['nn.LSTM padded'] / m['fastlstm']:.2f}x, "
                         f"{m['nn.LSTM packed'] / m['fastlstm']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    mach = payload["machine"]
    lines += ["", f"Machine: {report.device_label(mach)}; torch {mach['torch']}; git "
              f"{mach['git']}; median of {payload['run']['reps']} interleaved repetitions; "
              f"load average before the run {payload['run']['loadavg_before']}."]
    return "\n".join(lines)


def readme_block(payload, md_path, readme_dir):
    """The README's compact table: per row, fastlstm's speed-up over nn.LSTM padded under each
    load, inference then training."""
    loads = payload["run"]["loads"]
    label = lambda b: "idle" if b == 0 else f"{b} busy"  # noqa: E731
    by_row = {}
    for r in payload["results"]:
        m = r["median_ms"]
        by_row.setdefault(r["row"], {})[r["mode"]] = ", ".join(
            f"{m[str(b)]['nn.LSTM padded'] / m[str(b)]['fastlstm']:.2f}x" for b in loads)
    loads_text = ", ".join(label(b) for b in loads)
    lines = [f"| row | inference ({loads_text}) | training ({loads_text}) |", "|---|---|---|"]
    lines += [f"| {row} | {modes['inference']} | {modes['train']} |"
              for row, modes in by_row.items()]
    rel = os.path.relpath(md_path, readme_dir).replace(os.sep, "/")
    mach = payload["machine"]
    lines += ["", f"fastlstm's speed-up over nn.LSTM padded, idle and beside busy processes "
              f"(T=100, I=H), median of {payload['run']['reps']} interleaved repetitions on "
              f"{report.device_label(mach)}, torch {mach['torch']}, git {mach['git']} "
              f"(`python -m benchmarks.oversubscribed --update-readme`; times and nn.LSTM "
              f"packed: `{rel}`)."]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, nargs="+", default=[1, 2],
                   help="busy-process counts to run beside (after the idle run)")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--shape", type=int, nargs=4, metavar=("T", "B", "I", "H"),
                   help="one unidirectional row of this shape instead of the grid")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: as is)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--update-readme", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = grid()
    if args.shape:
        T, B, I, H = args.shape
        rows = [(f"uni B={B} H={H}", dict(T=T, B=B, I=I, H=H, bidirectional=False))]
    loads = [0] + [b for b in args.busy if b > 0]
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    samples = measure(rows, loads, args.reps)
    results = []
    for name, shape in rows:
        for mode in MODES:
            results.append({
                "row": name, "mode": mode, **shape,
                "samples_ms": {str(b): samples[(name, mode, b)] for b in loads},
                "median_ms": {str(b): {c: median(samples[(name, mode, b)][c])
                                       for c in CONTENDERS} for b in loads}})
    mach = report.machine(torch.device("cpu"))
    payload = {"machine": mach, "run": {
        "command": "python -m benchmarks.oversubscribed " + " ".join(argv or sys.argv[1:]),
        "loads": loads, "reps": args.reps, "loadavg_before": loadavg}, "results": results}
    table = markdown(payload)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, report.tag(mach, "oversubscribed"))
    report.write_json(stem + ".json", payload)
    report.write(stem + ".md", table + "\n")
    print(f"\nwrote {stem}.json, {stem}.md", file=sys.stderr)
    if args.update_readme:
        readme_path = os.path.join(os.path.dirname(HERE), "README.md")
        readme.update(readme_path, readme_block(payload, stem + ".md",
                                                os.path.dirname(readme_path)), (START, END))
        print(f"updated {readme_path}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
