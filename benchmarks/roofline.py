"""The CPU roofline: the machine's float32 FMA peak, measured, and how much of it fastlstm's time
loops reach on a row, so that "close to the limit" is a number on every machine.

The peak is a calibration loop of independent vector FMAs in the instruction set fastlstm's
kernels use (csrc/cpu/fma_peak.cpp), on one thread and on torch's threads at once: the best of
3 runs of 0.15 s each. A row's time loops are timed inside the op (torch.ops.fastlstm.
_cpu_loop_seconds: the wall time of every CPU layer call's loops), and their multiply-adds
counted from the lengths: per layer and direction, each valid token's recurrent product
h W_hh^T (8 H Hout flops) in the forward, and dh W_hh in the backward's loop; the inference's
loop also projects its inputs in chunks (8 H I per token), so its count includes them.
"""

import torch

CALIBRATION_S = 0.15
CALIBRATION_RUNS = 3


def calibrate():
    """{"isa", "threads", "peak_gflops_1thread", "peak_gflops"} for this process's threads."""
    threads = torch.get_num_threads()
    peak = lambda n: max(torch.ops.fastlstm._cpu_fma_peak_gflops(n, CALIBRATION_S)  # noqa: E731
                         for _ in range(CALIBRATION_RUNS))
    return {"isa": torch.ops.fastlstm._cpu_isa(), "threads": threads,
            "peak_gflops_1thread": peak(1), "peak_gflops": peak(threads)}


def loop_flops(w, lengths, backward):
    """Flops that fastlstm's time loops run for workload w (benchmarks.workloads.Workload) on
    these lengths: the forward's (or inference's) loops, plus the backward's when training."""
    tokens = int(lengths.sum())
    D = 2 if w.bidirectional else 1
    H = w.hidden_size
    flops = 0
    for layer in range(w.num_layers):
        inputs = w.input_size if layer == 0 else D * H
        recurrent = 8 * H * H
        if backward:
            flops += D * tokens * 2 * recurrent  # forward loop, backward loop
        else:
            flops += D * tokens * (recurrent + 8 * H * inputs)  # the inference's loop
    return flops


def loop_fraction(fn, w, lengths, backward, peak, reps=3):
    """Runs fn (fastlstm on the row) reps times; {"loop_ms", "loop_gflops", "fraction"} of
    its time loops against peak["peak_gflops"]."""
    before = torch.ops.fastlstm._cpu_loop_seconds()
    for _ in range(reps):
        fn()
    seconds = (torch.ops.fastlstm._cpu_loop_seconds() - before) / reps
    if seconds <= 0:
        return None
    gflops = loop_flops(w, lengths, backward) / seconds / 1e9
    return {"loop_ms": seconds * 1e3, "loop_gflops": gflops,
            "fraction": gflops / peak["peak_gflops"]}
