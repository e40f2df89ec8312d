"""The Keras row (`python -m benchmarks --keras`): a Keras 3 tagger on the torch backend,
Embedding(mask_zero=True) -> Bidirectional(LSTM(128, return_sequences=True)) -> Dense, with
fastlstm.keras.LSTM and with keras.layers.LSTM (the same weights), batch 32 padded to 64 steps.

Jobs: its train step (model.train_on_batch, SGD) and its inference (model.predict_on_batch),
each with a mask (Embedding(mask_zero=True), lengths from the "sentence" distribution of
benchmarks/lengths.py, padding id 0) and without one (mask_zero=False, every sequence 64
tokens). The two contenders of a job run interleaved (benchmarks/timing.py); medians are
compared. Before timing, both models' predictions are compared (max |diff| in the table).

It is its own table, not a row of the default suite: the suite's table (README's bench-table
block) has nn.LSTM's contenders as columns, which Keras does not fit. Keras runs on the torch
backend (KERAS_BACKEND=torch is set here unless already set, before keras is imported).
"""

import os
import time

import numpy as np
import torch

from . import lengths as length_dists
from . import report
from .timing import median, time_interleaved

SHAPE = {"batch": 32, "steps": 64, "units": 128, "embed": 128, "vocab": 1000, "tags": 10}
CONTENDERS = ("fastlstm.keras.LSTM", "keras.layers.LSTM")
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


def build_model(layer_class, masked, shape, seed):
    import keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((shape["steps"],), dtype="int32"),
        keras.layers.Embedding(shape["vocab"], shape["embed"], mask_zero=masked),
        keras.layers.Bidirectional(layer_class(shape["units"], return_sequences=True)),
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
    """({name: step}, max |prediction diff| between the two models before any step)."""
    import keras

    import fastlstm.keras
    classes = {"fastlstm.keras.LSTM": fastlstm.keras.LSTM,
               "keras.layers.LSTM": keras.layers.LSTM}
    models = {name: build_model(cls, masked, shape, seed) for name, cls in classes.items()}
    ref = models["keras.layers.LSTM"]
    models["fastlstm.keras.LSTM"].set_weights(ref.get_weights())
    ids, tags, _ = batch(masked, shape, seed)
    preds = [m.predict_on_batch(ids) for m in models.values()]
    diff = float(np.abs(preds[0] - preds[1]).max())
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
                        "speedup": med["keras.layers.LSTM"] / med["fastlstm.keras.LSTM"]})
        if progress:
            progress(results[-1])
    run_info = {"config": "keras", "reps": reps, "warmup": warmup, "shape": shape,
                "lengths": "sentence (masked), all 64 (no mask)",
                "command": None, "threads": torch.get_num_threads()}
    return {"machine": info, "run": run_info, "results": results}


def summary(r):
    ms = r["median_ms"]
    return (f"keras tagger {r['mode']:9s} {'mask' if r['masked'] else 'no mask':7s} "
            f"fastlstm.keras {ms['fastlstm.keras.LSTM']:8.2f} ms  keras "
            f"{ms['keras.layers.LSTM']:8.2f} ms  {r['speedup']:.1f}x")


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
            f"distribution, padding id 0; no mask: every sequence {s['steps']} tokens."),
        "",
        "| step | mask | tokens (padding) | fastlstm.keras.LSTM ms | keras.layers.LSTM ms | "
        "speedup | max pred. diff |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        ms = r["median_ms"]
        pad = 1 - r["valid_tokens"] / r["padded_tokens"]
        lines.append(f"| {r['mode']} | {'yes' if r['masked'] else 'no'} | {r['valid_tokens']} "
                     f"({100 * pad:.0f}%) | {ms['fastlstm.keras.LSTM']:.2f} | "
                     f"{ms['keras.layers.LSTM']:.2f} | {r['speedup']:.1f}x | "
                     f"{r['max_prediction_diff']:.1e} |")
    lines += ["", report._prose(
        "Speedup = keras.layers.LSTM's median time / fastlstm.keras.LSTM's. With a mask, Keras "
        "runs its per-step loop (every step, padding included, masked in Python); without one, "
        "its fused loop (one input projection, then a recurrent matmul per step).")]
    return "\n".join(lines)


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
    return payload
