"""Machine description and the JSON / markdown outputs of a benchmark run."""

import json
import os
import platform
import subprocess

import torch


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
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                       stderr=subprocess.DEVNULL, text=True).strip()
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
    return info


def device_label(info):
    if info["device"].startswith("cuda"):
        return info["gpu"]
    return f"{info['cpu']}, {info['cpu_threads']} threads"


def markdown(results, info):
    lines = [
        f"Machine: {device_label(info)}; torch {info['torch']}, CUDA {info['cuda']}, "
        f"cuDNN {info['cudnn']}; git {info['git']}.",
        "",
        "| workload | mode | valid tokens | fastlstm ms | nn.LSTM padded ms | nn.LSTM packed ms "
        "| vs padded | vs packed |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ms = r["median_ms"]
        lines.append(
            f"| {r['workload']['name']} | {r['mode']} | {r['valid_tokens']} "
            f"| {ms['fastlstm']:.1f} | {ms['nn.LSTM padded']:.1f} | {ms['nn.LSTM packed']:.1f} "
            f"| {r['speedup']['nn.LSTM padded']:.2f}x | {r['speedup']['nn.LSTM packed']:.2f}x |")
    lines += ["", "Speedup = contender's median time / fastlstm's median time (higher is better "
              "for fastlstm); repetitions interleaved."]
    return "\n".join(lines)


def write(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def write_json(path, payload):
    write(path, json.dumps(payload, indent=2) + "\n")
