"""Interleaved timing. Every repetition round runs each contender once, so that drift in machine
load hits all of them alike; medians are compared. The order rotates each round so that no
contender always runs first (after the round's synchronise) or right after a given other one.

On CUDA, CUDA events are recorded around each call with no synchronise between calls, which
would insert idle gaps and host latency into the figures; the device is synchronised once per
round, then the events are read. On the CPU, perf_counter around each call.
"""

import statistics
import time

import torch


def _round_cpu(fns):
    out = {}
    for name, fn in fns:
        t0 = time.perf_counter()
        fn()
        out[name] = (time.perf_counter() - t0) * 1e3
    return out


def _round_cuda(fns):
    events = []
    for name, fn in fns:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        events.append((name, start, end))
    torch.cuda.synchronize()
    return {name: start.elapsed_time(end) for name, start, end in events}


def time_interleaved(fns, device, warmup=1, reps=5):
    """fns: {name: callable}. Returns {name: [ms per repetition]}."""
    items = list(fns.items())
    run_round = _round_cuda if device.type == "cuda" else _round_cpu
    for _ in range(warmup):
        for _, fn in items:
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    samples = {name: [] for name in fns}
    for rep in range(reps):
        shift = rep % len(items)
        for name, ms in run_round(items[shift:] + items[:shift]).items():
            samples[name].append(ms)
    return samples


def median(xs):
    return statistics.median(xs)
