"""The Keras row (`python -m benchmarks --keras`): a Keras 3 tagger on the torch backend,
Embedding(mask_zero=True) -> Bidirectional(LSTM(128, return_sequences=True)) -> Dense, batch 32
padded to 64 steps, three ways with the same weights: fastlstm.keras.Bidirectional(
fastlstm.keras.LSTM) (both directions in one fastlstm op), keras.layers.Bidirectional(
fastlstm.keras.LSTM) (one fastlstm op per direction) and keras.layers.Bidirectional(
keras.layers.LSTM).

Jobs: its train step (model.train_on_batch, SGD) and its inference (model.predict_on_batch),
each with a mask (Embedding(mask_zero=True), lengths from the "sentence" distribution of
benchmarks/lengths.py, padding id 0) and without one (mask_zero=False, every sequence 64
tokens). The contenders of a job run interleaved (benchmarks/timing.py); medians are compared.
Before timing, the fastlstm models' predictions are compared with Keras's (max |diff| in the
table).

It is its own table, not a row of the default suite: the suite's table (README's bench-table
block) has nn.LSTM's contenders as columns, which Keras does not fit. Keras runs on the torch
backend (KERAS_BACKEND=torch is set here unless already set, before keras is imported).
"""

import os
import re
import textwrap
import time

import numpy as np
import torch

from . import lengths as length_dists
from . import report
from .timing import median, time_interleaved

SHAPE = {"batch": 32, "steps": 64, "units": 128, "embed": 128, "vocab": 1000, "tags": 10}
# name: (Bidirectional wrapper, LSTM class), both from fastlstm.keras or keras.layers
CONTENDERS = {"fastlstm.keras": ("fastlstm", "fastlstm"),
              "fastlstm.keras.LSTM": ("keras", "fastlstm"),
              "keras.layers.LSTM": ("keras", "keras")}
FASTEST, KERAS = "fastlstm.keras", "keras.layers.LSTM"
LABELS = {"fastlstm.keras": "fastlstm.keras.Bidirectional(fastlstm.keras.LSTM)",
          "fastlstm.keras.LSTM": "keras.layers.Bidirectional(fastlstm.keras.LSTM)",
          "keras.layers.LSTM": "keras.layers.Bidirectional(keras.layers.LSTM)"}
JOBS = [(mode, masked) for masked in (True, False) for mode in ("train", "inference")]


def keras_missing():
    """Why the Keras row cannot run here (keras 3 absent, another backend), or None."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return "keras is not installed (pip install 'fastlstm[keras]')"
    if int(keras.__version__.split(".")[0]) < 3:
        return f"keras {keras.__version__} is not Keras 3"
    if keras.backend.backend() != "torch":
        return f"Keras runs on {keras.backend.backend()!r}, not torch (set KERAS_BACKEND=torch)"
    return None


def build_model(layer_class, masked, shape, seed, wrapper=None):
    import keras
    keras.utils.set_random_seed(seed)
    wrapper = wrapper or keras.layers.Bidirectional
    return keras.Sequential([
        keras.Input((shape["steps"],), dtype="int32"),
        keras.layers.Embedding(shape["vocab"], shape["embed"], mask_zero=masked),
        wrapper(layer_class(shape["units"], return_sequences=True)),
        keras.layers.Dense(shape["tags"]),
    ])


def batch(masked, shape, seed):
    """(ids [B, T] int32, 0 past each length when masked; tags [B, T]; lengths [B])."""
    B, T = shape["batch"], shape["steps"]
    rng = np.random.default_rng(seed)
    lengths = (length_dists.draw("sentence", B, T, seed).numpy() if masked
               else np.full(B, T))
    ids = rng.integers(1, shape["vocab"], (B, T)).astype("int32")
    ids[np.arange(T)[None, :] >= lengths[:, None]] = 0
    return ids, rng.integers(0, shape["tags"], (B, T)).astype("int32"), lengths


def contenders(mode, masked, shape, seed=0):
    """({name: step}, max |prediction diff| between a fastlstm model and Keras's before any
    step)."""
    import keras

    import fastlstm.keras
    module = {"fastlstm": fastlstm.keras, "keras": keras.layers}
    models = {name: build_model(module[lstm].LSTM, masked, shape, seed,
                                module[wrapper].Bidirectional)
              for name, (wrapper, lstm) in CONTENDERS.items()}
    ref = models[KERAS]
    for name, model in models.items():
        if model is not ref:
            model.set_weights(ref.get_weights())
    ids, tags, _ = batch(masked, shape, seed)
    want = ref.predict_on_batch(ids)
    diff = max(float(np.abs(m.predict_on_batch(ids) - want).max())
               for m in models.values() if m is not ref)
    fns = {}
    for name, model in models.items():
        if mode == "train":
            model.compile(optimizer=keras.optimizers.SGD(1e-3),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            fns[name] = lambda m=model: m.train_on_batch(ids, tags)
        else:
            fns[name] = lambda m=model: m.predict_on_batch(ids)
    return fns, diff


def run(reps=7, warmup=1, shape=None, seed=0, progress=None):
    """Every job, measured; returns the payload (machine, run, results)."""
    import keras
    shape = dict(SHAPE, **(shape or {}))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Keras's choice
    info = report.machine(device)
    info["keras"] = keras.__version__
    results = []
    for mode, masked in JOBS:
        fns, diff = contenders(mode, masked, shape, seed)
        samples = time_interleaved(fns, device, warmup, reps)
        med = {name: median(s) for name, s in samples.items()}
        lengths = batch(masked, shape, seed)[2]
        results.append({"mode": mode, "masked": masked, "valid_tokens": int(lengths.sum()),
                        "padded_tokens": int(shape["batch"] * shape["steps"]),
                        "max_prediction_diff": diff, "samples_ms": samples, "median_ms": med,
                        "speedup": med[KERAS] / med[FASTEST],
                        "speedup_per_direction": med[KERAS] / med["fastlstm.keras.LSTM"]})
        if progress:
            progress(results[-1])
    run_info = {"config": "keras", "reps": reps, "warmup": warmup, "shape": shape,
                "lengths": "sentence (masked), all 64 (no mask)",
                "command": None, "threads": torch.get_num_threads()}
    return {"machine": info, "run": run_info, "results": results}


def summary(r):
    ms = r["median_ms"]
    return (f"keras tagger {r['mode']:9s} {'mask' if r['masked'] else 'no mask':7s} "
            f"fastlstm.keras {ms[FASTEST]:8.2f} ms  (per direction "
            f"{ms['fastlstm.keras.LSTM']:8.2f} ms)  keras {ms[KERAS]:8.2f} ms  "
            f"{r['speedup']:.1f}x")


def markdown(payload):
    info, run = payload["machine"], payload["run"]
    s = run["shape"]
    lines = [
        report._prose(
            f"Keras tagger: Embedding({s['vocab']}, {s['embed']}, mask_zero) -> "
            f"Bidirectional(LSTM({s['units']}, return_sequences=True)) -> Dense({s['tags']}), "
            f"batch {s['batch']} padded to {s['steps']} steps. Machine: "
            f"{report.device_label(info)}; torch {info['torch']}, keras {info['keras']}, "
            f"backend torch; git {info['git']}. Median of {run['reps']} interleaved "
            f"repetitions after {run['warmup']} warm-up. train = model.train_on_batch (SGD), "
            f"inference = model.predict_on_batch; masked: lengths from the sentence "
            f"distribution, padding id 0; no mask: every sequence {s['steps']} tokens."
            + (f" 1-minute load average at the end of the run: {info['load_average']:.2f}."
               if info.get("load_average") is not None else "")),
        "",
        "| step | mask | tokens (padding) | fastlstm.keras ms | fastlstm.keras.LSTM ms | "
        "keras.layers.LSTM ms | speedup | max pred. diff |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        ms = r["median_ms"]
        pad = 1 - r["valid_tokens"] / r["padded_tokens"]
        lines.append(f"| {r['mode']} | {'yes' if r['masked'] else 'no'} | {r['valid_tokens']} "
                     f"({100 * pad:.0f}%) | {ms[FASTEST]:.2f} | "
                     f"{ms['fastlstm.keras.LSTM']:.2f} | {ms[KERAS]:.2f} | "
                     f"{r['speedup']:.1f}x | {r['max_prediction_diff']:.1e} |")
    lines += ["", report._prose(
        "Columns: " + "; ".join(f"{name} = {label}" for name, label in LABELS.items()) + ". "
        "Speedup = keras.layers.LSTM's median time / fastlstm.keras's. With a mask, Keras "
        "runs its per-step loop (every step, padding included, masked in Python); without one, "
        "its fused loop (one input projection, then a recurrent matmul per step).")]
    return "\n".join(lines)


README_START, README_END = "<!-- keras-figure -->", "<!-- /keras-figure -->"


def readme_figure(payload, md_path, readme_dir):
    """The README's Keras figure, one unwrapped paragraph: the masked train step and inference
    from this run (main writes it into the keras-figure block with --update-readme)."""
    info = payload["machine"]
    rows = {(r["mode"], r["masked"]): r for r in payload["results"]}
    train, infer = rows.get(("train", True)), rows.get(("inference", True))
    if train is None or infer is None:
        raise ValueError("the README's Keras figure needs the masked train and inference jobs")
    s, ms = payload["run"]["shape"], train["median_ms"]
    load = f", load {info['load_average']:.1f}" if info.get("load_average") is not None else ""
    return (f"Masked tagger (B={s['batch']}, T={s['steps']}, H={s['units']}; "
            f"{_short_device(info)}{load}): train step {ms[FASTEST]:.1f} ms "
            f"({ms['fastlstm.keras.LSTM']:.1f} ms one op per direction) against Keras's "
            f"{ms[KERAS]:.0f} ms ({train['speedup']:.1f}x), inference {infer['speedup']:.1f}x "
            f"(`{os.path.relpath(md_path, readme_dir).replace(os.sep, '/')}`).")


def _short_device(info):
    """report.device_label without trademark signs and generic words (the README line is
    short): "Intel(R) Xeon(R) Processor, 2 threads" -> "Intel Xeon, 2 threads"."""
    label = report.device_label(info)
    return " ".join(re.sub(r"\((R|TM)\)|\b(Processor|CPU)\b", "", label).split()).replace(
        " ,", ",")


def write_readme_figure(readme_path, figure, width=100):
    """Writes figure into README's keras-figure block: inline comments in a paragraph, the
    start one ending a line, so that the figure continues that line and wraps after it."""
    from . import readme
    with open(readme_path) as f:
        content = f.read()
    at = content.find(README_START)
    if at < 0:
        raise ValueError(f"{readme_path}: no {README_START} ... {README_END} block to replace")
    offset = at + len(README_START) - (content.rfind("\n", 0, at) + 1)
    text = textwrap.fill(figure, width, initial_indent="x" * offset, break_long_words=False,
                         break_on_hyphens=False)[offset:]
    readme.update(readme_path, text, (README_START, README_END), own_lines=False)


def main(args, command):
    """`python -m benchmarks --keras`: runs the jobs, writes <tag>.json and <tag>.md to
    args.out (and --json / --markdown), prints the table; returns the payload."""
    missing = keras_missing()
    if missing:
        raise SystemExit(f"python -m benchmarks --keras: {missing}")
    started = time.monotonic()
    payload = run(reps=args.reps or 7, warmup=1 if args.warmup is None else args.warmup,
                  progress=lambda r: print(summary(r), flush=True))
    payload["run"]["command"] = command
    payload["run"]["seconds"] = round(time.monotonic() - started, 1)
    payload["machine"]["load_average"] = round(os.getloadavg()[0], 2)  # (machines are shared)
    stem = os.path.join(args.out, report.tag(payload["machine"], "keras"))
    table = markdown(payload)
    report.write_json(stem + ".json", payload)
    report.write(stem + ".md", table + "\n")
    if args.json:
        report.write_json(args.json, payload)
    if args.markdown:
        report.write(args.markdown, table + "\n")
    print(table)
    print(f"\nwrote {stem}.json, {stem}.md")
    if args.update_readme:
        readme_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))), "README.md")
        write_readme_figure(readme_path, readme_figure(payload, stem + ".md",
                                                       os.path.dirname(readme_path)))
        print(f"updated {readme_path}")
    return payload
