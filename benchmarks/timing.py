"""Interleaved timing: every repetition runs each contender once, in turn, so that drift in
machine load hits all of them alike; we then compare medians."""

import statistics
import time

import torch


def _timer(device):
    if device.type == "cuda":
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:
        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    return timed


def time_interleaved(fns, device, warmup=1, reps=5):
    """fns: {name: callable}. Returns {name: [ms per repetition]}."""
    timed = _timer(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            samples[name].append(timed(fn))
    return samples


def median(xs):
    return statistics.median(xs)
