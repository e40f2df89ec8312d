"""Machine description, and the JSON and markdown outputs of a benchmark run."""

import json
import os
import platform
import re
import subprocess
import textwrap
from collections import defaultdict

import torch

from .contenders import BASELINES, CONTENDERS
from .workloads import Workload


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_revision():
    """HEAD, with +dirty when the code measured (kernels, package, suite) differs from it; the
    suite's own results (benchmarks/results) are not code, so an earlier run's files left
    uncommitted do not count."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                      stderr=subprocess.DEVNULL, text=True).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "csrc", "fastlstm",
                                "benchmarks", ":!benchmarks/results", "setup.py"], cwd=root,
                               stderr=subprocess.DEVNULL).returncode != 0
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device):
    info = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git": git_revision(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        # torch's defaults: cuDNN (nn.LSTM) may use TF32 for float32, cuBLAS matmuls may not.
        info["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                        "cudnn": torch.backends.cudnn.allow_tf32}
    return info


def device_label(info):
    if info["device"].startswith("cuda"):
        return info["gpu"]
    return f"{info['cpu']}, {info['cpu_threads']} threads"


def tag(info, config_name):
    """File-name stem of a run's outputs, e.g. cpu_xeon-2threads_default_torch2.14.1."""
    if info["device"].startswith("cuda"):
        where = "cuda_" + re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    else:
        words = re.findall(r"[a-z0-9]+", info["cpu"].lower())
        family = next((w for w in words if w in ("xeon", "epyc", "ryzen", "core", "neoverse")),
                      words[-1] if words else "cpu")
        where = f"cpu_{family}-{info['cpu_threads']}threads"
    return f"{where}_{config_name}_torch{info['torch'].split('+')[0]}"


def _tokens_per_s(x):
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _mib(x):
    return "n/a" if x is None else f"{x:.1f}"


def _prose(text):
    return textwrap.fill(text, 96, break_long_words=False, break_on_hyphens=False)


def per_step(results):
    """Per-step latency: for each group of rows that differ only in max_len (same mode), the
    longest T's median time minus the shortest T's, over the difference in steps, for every
    contender. Steps are the batch's longest sequence, which the recurrence runs: max_len
    itself for equal lengths (T=1000 minus T=100 over 900), the longest draw otherwise. The
    difference cancels what does not grow with T (launches, setup). Per time step of the
    whole model: both directions and every layer."""
    groups = defaultdict(list)
    for r in results:
        if "error" in r:
            continue
        fields = tuple(sorted((k, v) for k, v in r["workload"].items()
                              if k not in ("name", "max_len")))
        groups[(r["mode"], fields)].append(r)
    rows = []
    for (mode, fields), rs in groups.items():
        short = min(rs, key=lambda r: r["workload"]["max_len"])
        long = max(rs, key=lambda r: r["workload"]["max_len"])
        steps = long["batch_max_len"] - short["batch_max_len"]
        if long is short or steps <= 0:
            continue
        rows.append({
            "workload": Workload(**dict(fields, max_len="*")).name, "mode": mode,
            "max_len": [short["workload"]["max_len"], long["workload"]["max_len"]],
            "batch_max_len": [short["batch_max_len"], long["batch_max_len"]], "steps": steps,
            "per_step_us": {c: (long["median_ms"][c] - short["median_ms"][c]) * 1e3 / steps
                            for c in CONTENDERS}})
    return rows


def _per_step_lines(rows):
    if not rows:
        return []
    lines = [
        "",
        _prose("Per-step latency, microseconds per time step (whole model: both directions, "
               "every layer): (time at the longest T - time at the shortest T) / (difference "
               "in steps), steps being the batch's longest sequence (T=1000 minus T=100 over "
               "900 for equal lengths)."),
        "",
        "| workload | mode | T long-short | " + " | ".join(f"{n} us/step" for n in CONTENDERS) + " |",
        "|---|---|---:|" + "---:|" * len(CONTENDERS),
    ]
    for p in rows:
        lines.append(f"| {p['workload']} | {p['mode']} | {p['batch_max_len'][1]}-"
                     f"{p['batch_max_len'][0]} | "
                     + " | ".join(f"{p['per_step_us'][n]:.2f}" for n in CONTENDERS) + " |")
    return lines


def markdown(payload, speed_only=False):
    """The run's tables; speed_only: the speed table and its notes, without the memory and
    per-step tables (the README's block)."""
    info, run = payload["machine"], payload["run"]
    results = [r for r in payload["results"] if "error" not in r]
    failed = [r for r in payload["results"] if "error" in r]
    short = {name: name.replace("nn.LSTM ", "") for name in BASELINES}
    tf32 = info.get("tf32")
    lines = [
        _prose(f"Machine: {device_label(info)}; torch {info['torch']}, CUDA {info['cuda']}, "
               f"cuDNN {info['cudnn']}; git {info['git']}. Config `{run['config']}`: median of "
               f"{run['reps']} interleaved repetitions after {run['warmup']} warm-up, "
               f"{run['buckets']} buckets."
               + (f" TF32 for float32: matmul {'on' if tf32['matmul'] else 'off'}, cuDNN "
                  f"{'on' if tf32['cudnn'] else 'off'}." if tf32 else "")),
        "",
    ]
    if run.get("stopped"):
        lines += [_prose(f"**Partial run**: {run['stopped']}."), ""]
    peak = info.get("fma_peak")
    if peak:
        lines += [_prose(
            f"Roofline: this CPU's float32 FMA peak, measured ({peak['isa']}, "
            "benchmarks/roofline.py), is "
            f"{peak['peak_gflops_1thread']:.0f} GFLOP/s on one thread and "
            f"{peak['peak_gflops']:.0f} on {peak['threads']}. Column \"loops % peak\": the "
            "share of that peak that fastlstm's time loops reach (their GFLOP/s, timed inside "
            "the op, over the multi-thread peak; float32 rows)."), ""]
    roof = lambda r: (f" | {100 * r['loop_roofline']['fraction']:.0f}%"  # noqa: E731
                      if r.get("loop_roofline") else " | n/a") if peak else ""
    lines += [
        "| workload | mode | tokens (padding) | fastlstm ms | "
        + " | ".join(f"{short[b]} ms" for b in BASELINES)
        + " | fastlstm tokens/s | " + " | ".join(f"vs {short[b]}" for b in BASELINES)
        + (" | loops % peak" if peak else "") + " |",
        "|---|---|---:|" + "---:|" * (2 * len(BASELINES) + 2 + bool(peak)),
    ]
    for r in results:
        ms = r["median_ms"]
        lines.append(
            f"| {r['workload']['name']} | {r['mode']} | {r['valid_tokens']} "
            f"({100 * r['padding_fraction']:.0f}%) | {ms['fastlstm']:.2f} | "
            + " | ".join(f"{ms[b]:.2f}" for b in BASELINES)
            + f" | {_tokens_per_s(r['tokens_per_s']['fastlstm'])} | "
            + " | ".join(f"{r['speedup'][b]:.2f}x" for b in BASELINES) + roof(r) + " |")
    slower = {b: sum(r["speedup"][b] < 1 for r in results) for b in BASELINES}
    lines += [
        "",
        _prose("Speedup = the nn.LSTM variant's median time / fastlstm's (above 1: fastlstm is "
               "faster). fastlstm is slower in "
               + ", ".join(f"{slower[b]} of {len(results)} rows against {short[b]}"
                           for b in BASELINES)
               + ". \"padded\" ignores the lengths: it computes the padding and its h_n is wrong; "
               "\"packed\" and \"bucketed\" are correct (see benchmarks/contenders.py)."),
    ]
    if speed_only:
        return "\n".join(lines)
    lines += [
        "",
        _prose(f"Peak memory of one step, MiB above the weights and input "
               f"({run['memory_method']}):"),
        "",
        "| workload | mode | " + " | ".join(f"{name} MiB" for name in CONTENDERS) + " |",
        "|---|---|" + "---:|" * len(CONTENDERS),
    ]
    for r in results:
        peak = r["peak_mib"] or {}
        lines.append(f"| {r['workload']['name']} | {r['mode']} | "
                     + " | ".join(_mib(peak.get(name)) for name in CONTENDERS) + " |")
    inference = [r for r in results if r["mode"] == "forward" and r.get("peak_mib")]
    if inference:
        above = {b: sum(r["peak_mib"]["fastlstm"] > r["peak_mib"][b] for r in inference
                        if r["peak_mib"].get(b) is not None) for b in BASELINES}
        lines += ["", _prose("Inference (forward) peak memory: fastlstm above "
                             + ", ".join(f"{short[b]} in {above[b]} of {len(inference)} rows"
                                         for b in BASELINES) + ".")]
    lines += _per_step_lines(per_step(results))
    notes = sorted({r["memory_note"] for r in results if r.get("memory_note")})
    lines += [f"\nMemory not measured: {note}" for note in notes]
    if failed:
        lines += ["", f"Failed ({len(failed)}), listed rather than left out:", ""]
        lines += [f"- {r['workload']['name']} {r['mode']}: {r['error']}" for r in failed]
    return "\n".join(lines)


def write(path, text):
    """Atomic: a reader (or a kill mid-write) sees the old file or the new one, never half."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path, payload):
    write(path, json.dumps(payload, indent=1) + "\n")
