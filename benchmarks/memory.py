"""Peak memory of one step of each contender, in MiB above what was held before the step (the
weights and the input are not counted; gradients, activations and workspaces are). Measured
after the timings, on steps already warmed up, so that what is built once (oneDNN primitives,
thread pools, MKL's buffer pool) is not charged to a step.

CUDA: torch.cuda.max_memory_allocated, its peak reset before each contender.

CPU: tracemalloc does not see torch's allocations and torch keeps no CPU allocator statistics,
so we measure the process's resident memory: the kernel's high-water mark (VmHWM), reset
through /proc/self/clear_refs before the step, minus the resident size just before it. That
sees every allocation (torch, oneDNN, fastlstm). glibc keeps freed heap memory resident for
reuse, which would hide a step's buffers, so malloc_trim(0) first hands every free page back to
the kernel. It counts whole pages, so a path made of many small allocations (nn.LSTM on packed
input: a few tensors per time step) reads higher than its live bytes would. torch.profiler's
profile_memory sees live bytes, but slows the packed paths several-fold, too slow for the
default run. Where RSS cannot be read this way (not Linux, not glibc) the figures are None.
"""

import ctypes
import ctypes.util
import gc
import os

import torch

MIB = 2.0 ** 20
CLEAR_REFS = "/proc/self/clear_refs"
METHOD = {"cuda": "torch.cuda.max_memory_allocated",
          "cpu": "resident-memory high-water mark of the step: Linux VmHWM after malloc_trim, "
                 "whole pages"}


def peaks(fns, device):
    """({name: MiB}, None) for steps {name: callable} already warmed up, or (None, why not)."""
    if device.type == "cuda":
        return cuda_peaks(fns, device), None
    reason = cpu_unsupported()
    return (None, reason) if reason else (cpu_peaks(fns), None)


def cuda_peaks(fns, device):
    """{name: MiB} for steps {name: callable} already warmed up."""
    out = {}
    for name, fn in fns.items():
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        out[name] = (torch.cuda.max_memory_allocated(device) - base) / MIB
    return out


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def cpu_unsupported():
    """None when the CPU measurement works here, else why not."""
    if not (os.path.exists(CLEAR_REFS) and os.access(CLEAR_REFS, os.W_OK)):
        return f"{CLEAR_REFS} is not writable here (Linux only)"
    if _TRIM is None:
        return "no glibc malloc_trim here"
    return None


def _kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def cpu_peaks(fns):
    """{name: MiB}, as cuda_peaks, where cpu_unsupported() is None."""
    out = {}
    for name, fn in fns.items():
        gc.collect()
        _TRIM(0)
        before = _kib("VmRSS")
        with open(CLEAR_REFS, "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        fn()
        out[name] = max(0, _kib("VmHWM") - before) * 1024 / MIB
    return out
