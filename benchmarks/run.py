"""Times fastlstm against nn.LSTM on padded and on packed input.

    python -m benchmarks                      # default workloads, on CUDA if present
    python -m benchmarks --device cpu --reps 9 --json out.json --markdown out.md
"""

import argparse
import sys

import torch

from . import report
from .contenders import CONTENDERS, make_models
from .timing import median, time_interleaved
from .workloads import DEFAULT

MODES = {"forward": False, "forward+backward": True}


def run_workload(w, device, mode, reps, warmup, seed=0):
    torch.manual_seed(seed)
    dtype = getattr(torch, w.dtype)
    ref, fast = make_models(w, device, dtype)
    lengths = w.draw_lengths(seed)
    backward = MODES[mode]
    x = torch.randn(w.max_len, w.batch, w.input_size, device=device, dtype=dtype,
                    requires_grad=backward)
    if backward:
        fns = {name: make(ref, fast, x, lengths, True) for name, make in CONTENDERS.items()}
        samples = time_interleaved(fns, device, warmup, reps)
    else:
        with torch.inference_mode():
            fns = {name: make(ref, fast, x, lengths, False) for name, make in CONTENDERS.items()}
            samples = time_interleaved(fns, device, warmup, reps)
    med = {name: median(s) for name, s in samples.items()}
    return {
        "workload": w.as_dict(),
        "mode": mode,
        "valid_tokens": w.tokens(lengths),
        "padded_tokens": w.max_len * w.batch,
        "samples_ms": samples,
        "median_ms": med,
        "speedup": {name: med[name] / med["fastlstm"] for name in med if name != "fastlstm"},
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per contender")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    info = report.machine(device)
    results = []
    for w in DEFAULT:
        for mode in args.modes:
            r = run_workload(w, device, mode, args.reps, args.warmup)
            print(f"{w.name:32s} {mode:17s} fastlstm {r['median_ms']['fastlstm']:8.1f} ms   "
                  f"vs padded {r['speedup']['nn.LSTM padded']:.2f}x   "
                  f"vs packed {r['speedup']['nn.LSTM packed']:.2f}x", file=sys.stderr, flush=True)
            results.append(r)
    table = report.markdown(results, info)
    print(table)
    if args.json:
        report.write_json(args.json, {"machine": info, "results": results})
    if args.markdown:
        report.write(args.markdown, table + "\n")
    return results


if __name__ == "__main__":
    main()
