"""fastlstm's benchmark suite: fastlstm against nn.LSTM on padded input, on packed input, and
on length-bucketed batches, in inference (forward) and training (forward+backward), on CUDA
when present, else on the CPU.

    python -m benchmarks                     # the default config: ~1.5 minutes on 2 idle CPU cores
    python -m benchmarks --sweep             # the larger grid
    python -m benchmarks --config my.json    # a config file (--dump-config prints one)
    python -m benchmarks --update-readme     # also put the tables and plots into README.md
    python -m benchmarks --incremental       # JSON after every job; SIGTERM/SIGINT stop cleanly
    python -m benchmarks --time-limit 170    # start no job after 170 s; write what was measured
    python -m benchmarks --keras             # a Keras tagger: fastlstm.keras vs keras.layers.LSTM
    python -m benchmarks --keras --update-readme   # also its figure into README.md

Writes <tag>.json (machine, versions, every repetition, per-step latencies), <tag>.md (tables)
and <tag>_*.png (plots) to --out, where tag names the device, the config and torch.
With --incremental (for time-capped runs: `timeout 180 python -m benchmarks --incremental`), the
JSON is rewritten after every job, so that even a kill leaves the jobs done; SIGTERM or SIGINT
ends the run after the job in progress and writes every output for the jobs done, marked as a
partial run. --time-limit SECONDS does the same by itself once SECONDS have passed since the run
began (checked after every job), so that a capped run stops cleanly before its cap.
"""

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import time

import torch

from . import config, lengths, memory, plots, readme, report, roofline
from .contenders import BASELINES, build
from .progress import Progress
from .timing import median, time_interleaved

HERE = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def cuda_path(path):
    """FASTLSTM_CUDA_PATH=path for the duration (the ops read it at every call);
    "cluster-global" is the cluster path with FASTLSTM_CUDA_DSMEM=0 (h through global memory
    instead of distributed shared memory), "persistent-unstaged" the persistent path with
    FASTLSTM_CUDA_STAGE=0 (the tensor-core products read A from global memory instead of
    staging it in shared memory)."""
    env = {"FASTLSTM_CUDA_PATH": path, "FASTLSTM_CUDA_DSMEM": None, "FASTLSTM_CUDA_STAGE": None}
    if path == "cluster-global":
        env.update(FASTLSTM_CUDA_PATH="cluster", FASTLSTM_CUDA_DSMEM="0")
    if path == "persistent-unstaged":
        env.update(FASTLSTM_CUDA_PATH="persistent", FASTLSTM_CUDA_STAGE="0")
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        _set_env(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            _set_env(k, v)


def _set_env(key, value):
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def measure(w, device, mode, cfg, measure_memory=True, seed=0, peak=None):
    """One (workload, mode): timings, then peak memory, then (CPU, given the machine's
    measured FMA peak) the fraction of it that fastlstm's time loops reach. Errors are
    recorded, not raised, so that a failing contender shows up in the report instead of
    ending the run."""
    backward = mode == "forward+backward"
    lens = w.draw_lengths(seed)
    valid, padded = int(lens.sum()), int(lens.max()) * w.batch
    row = {"workload": w.as_dict(), "mode": mode, "batch_max_len": int(lens.max()),
           "valid_tokens": valid, "padded_tokens": padded,
           "padding_fraction": 1 - valid / padded, "length_cv": lengths.variation(lens),
           "peak_mib": None}
    try:
        with cuda_path(w.cuda_path), torch.inference_mode(not backward):
            fns = build(w, device, lens, backward, cfg["buckets"], seed)
            samples = time_interleaved(fns, device, cfg["warmup"], cfg["reps"])
            if measure_memory:
                row["peak_mib"], row["memory_note"] = memory.peaks(fns, device)
            if peak is not None and w.dtype == "float32":
                row["loop_roofline"] = roofline.loop_fraction(fns["fastlstm"], w, lens,
                                                              backward, peak)
    except (RuntimeError, ValueError, TypeError) as e:
        row["error"] = f"{type(e).__name__}: {e}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    med = {name: median(s) for name, s in samples.items()}
    row.update(samples_ms=samples, median_ms=med,
               tokens_per_s={name: valid / (ms / 1e3) for name, ms in med.items()},
               speedup={b: med[b] / med["fastlstm"] for b in BASELINES})
    return row


def _summary(row):
    w = row["workload"]["name"]
    if "error" in row:
        return f"{w:34s} {row['mode']:17s} FAILED {row['error'][:80]}"
    return (f"{w:34s} {row['mode']:17s} fastlstm {row['median_ms']['fastlstm']:8.2f} ms  "
            + "  ".join(f"vs {b.split()[-1]} {row['speedup'][b]:.2f}x" for b in BASELINES))


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default",
                   help=f"a preset ({', '.join(config.PRESETS)}) or a JSON config file")
    p.add_argument("--sweep", action="store_true", help="the larger preset (--config sweep)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, help="timed repetitions per contender (default: config's)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default: config's)")
    p.add_argument("--buckets", type=int,
                   help="groups of the bucketed contender (default: config's)")
    p.add_argument("--modes", nargs="+", choices=config.MODES, help="default: config's")
    p.add_argument("--filter", help="only workloads whose name contains this text")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="folder for the JSON, markdown and PNG outputs (default: %(default)s)")
    p.add_argument("--json", help="also write the JSON here")
    p.add_argument("--markdown", help="also write the tables here")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--update-readme", action="store_true",
                   help="replace the bench-table block of README.md with this run's output "
                        "(with --keras: the keras-figure block)")
    p.add_argument("--incremental", action="store_true",
                   help="rewrite the JSON after every job; on SIGTERM/SIGINT stop and write "
                        "the outputs of the jobs done")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="start no job once SECONDS have passed since the run began; the outputs "
                        "then hold the jobs done, marked as a partial run")
    p.add_argument("--keras", action="store_true",
                   help="instead of the suite, the Keras row: a Keras 3 tagger's train step and "
                        "inference with fastlstm.keras (Bidirectional and LSTM) against "
                        "keras.layers.LSTM, with and without a mask, in its own table "
                        "(benchmarks/keras_tagger.py; needs keras); --reps, --warmup, --out, "
                        "--json, --markdown, --update-readme apply")
    p.add_argument("--gpu-model", action="store_true",
                   help="print the cost model's predicted per-step time of the persistent CUDA "
                        "kernels on an H100 for the GPU session's grid (benchmarks/gpu_model.py; "
                        "no GPU needed) and exit")
    p.add_argument("--list", action="store_true", help="print the workloads and exit")
    p.add_argument("--dump-config", action="store_true", help="print the config as JSON and exit")
    return p.parse_args(argv)


def main(argv=None):
    started = time.monotonic()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config.load("sweep" if args.sweep else args.config)
    for key in ("reps", "warmup", "buckets", "modes"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.keras:
        from . import keras_tagger
        return keras_tagger.main(args, _command(argv))
    if args.gpu_model:
        from . import gpu_model
        return gpu_model.main()
    if args.dump_config:
        print(json.dumps(cfg, indent=2))
        return None
    device = torch.device(args.device)
    work = [w for w in config.workloads(cfg, device.type)
            if not args.filter or args.filter in w.name]
    jobs = [(w, mode) for w in work for mode in cfg["modes"]]
    if args.list:
        print("\n".join(f"{w.name} {mode}" for w, mode in jobs))
        return None

    set_tf32(cfg.get("tf32"))
    info = report.machine(device)
    if device.type == "cpu":
        info["fma_peak"] = roofline.calibrate()
    results = []
    run = {k: cfg[k] for k in ("reps", "warmup", "buckets", "modes")}
    run.update(config=cfg["name"], grids=cfg["grids"], command=_command(argv),
               tf32=cfg.get("tf32"), jobs=len(jobs),
               memory_method="not measured (--no-memory)" if args.no_memory
               else memory.METHOD[device.type])
    payload = {"machine": info, "run": run, "results": results, "per_step": []}
    stem = _stem(payload, args)
    stop = []  # the name of the signal that asked the run to stop (--incremental)
    old_handlers = _catch_stop_signals(stop) if args.incremental else {}
    try:
        with Progress(len(jobs), desc=f"bench {cfg['name']} on {device.type}") as bar:
            for w, mode in jobs:
                results.append(measure(w, device, mode, cfg, not args.no_memory,
                                       peak=info.get("fma_peak")))
                bar.write(_summary(results[-1]))
                bar.update()
                if args.incremental:
                    run["stopped"] = f"partial JSON: {len(results)} of {len(jobs)} jobs done"
                    payload["per_step"] = report.per_step(results)
                    report.write_json(stem + ".json", payload)
                if stop:
                    break
                if (args.time_limit is not None and len(results) < len(jobs)
                        and time.monotonic() - started >= args.time_limit):
                    stop.append(f"its {args.time_limit:g} s time limit")
                    break
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
    run.pop("stopped", None)
    if stop:
        run["stopped"] = f"stopped by {stop[0]} after {len(results)} of {len(jobs)} jobs"
        print(f"\n{run['stopped']}; writing what was measured", file=sys.stderr)
    payload["per_step"] = report.per_step(results)
    write_outputs(payload, args)
    return payload


def set_tf32(flag):
    """The config's "tf32": None leaves torch's defaults; else both cuBLAS and cuDNN."""
    if flag is not None:
        torch.backends.cuda.matmul.allow_tf32 = bool(flag)
        torch.backends.cudnn.allow_tf32 = bool(flag)


def _catch_stop_signals(stop):
    """SIGTERM / SIGINT append their name to `stop`: the run ends after the job in progress.
    Returns the handlers they replace."""
    def handler(signum, frame):
        stop.append(signal.Signals(signum).name)
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def _stem(payload, args):
    return os.path.join(args.out, report.tag(payload["machine"], payload["run"]["config"]))


def _command(argv):
    words = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m benchmarks"] + [shlex.quote(w) for w in words])


def write_outputs(payload, args):
    os.makedirs(args.out, exist_ok=True)
    stem = _stem(payload, args)
    table = report.markdown(payload)
    files = {"json": stem + ".json", "markdown": stem + ".md"}
    title = (f"fastlstm vs nn.LSTM: {report.device_label(payload['machine'])}, "
             f"torch {payload['machine']['torch']}, config {payload['run']['config']}")
    files["png"], note = plots.draw_all(payload["results"], stem, title)
    if note:
        payload["run"]["plot_note"] = note
    report.write_json(files["json"], payload)
    report.write(files["markdown"], table + "\n")
    if args.json:
        report.write_json(args.json, payload)
    if args.markdown:
        report.write(args.markdown, table + "\n")
    print(table)
    print("\nwrote " + ", ".join([files["json"], files["markdown"]] + files["png"]),
          file=sys.stderr)
    if args.update_readme:
        readme_path = os.path.join(os.path.dirname(HERE), "README.md")
        readme.update(readme_path, readme.block(payload, report.markdown(payload, True), files,
                                                os.path.dirname(readme_path)))
        print(f"updated {readme_path}", file=sys.stderr)
