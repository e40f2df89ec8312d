"""What a run measures: the embedded presets, config files, and their expansion into workloads.

A config is JSON (`python -m benchmarks --dump-config` prints the default one to start from):

    {"name": "mine", "reps": 5, "warmup": 1, "buckets": 4,
     "modes": ["forward", "forward+backward"],
     "grids": [{"batch": [16, 64], "hidden_size": [128, 512], "lengths": ["sentence"]}]}

Each grid is a cartesian product over the axes in GRID_AXES; an axis a grid leaves out takes its
value from GRID_DEFAULTS (input_size stays 128 as hidden_size varies, like a fixed embedding).
"devices" limits a grid to some device types (half precision is CUDA-only in fastlstm). The run
is the union of the grids, duplicates dropped, in order.

"tf32" (optional, run-wide): false turns TF32 off for float32 on CUDA, in cuBLAS matmuls and in
cuDNN (torch's default lets cuDNN, hence nn.LSTM, use TF32 while fastlstm's matmuls do not);
true turns it on for both; absent leaves torch's defaults. The run records what was in force.
bfloat16 and float16 are unaffected by it.

"cuda_path" (a grid axis, default "auto") sets FASTLSTM_CUDA_PATH while fastlstm runs: "step",
"persistent" or "cluster" force one CUDA path (csrc/cuda/persistent.cuh), "cluster-global" the
cluster path with h through global memory instead of distributed shared memory
(FASTLSTM_CUDA_DSMEM=0), and "persistent-unstaged" the persistent path with the tensor-core
products' A read from global memory instead of staged in shared memory (FASTLSTM_CUDA_STAGE=0);
a workload forcing one is named with that suffix. It changes nothing on the CPU.
"""

import copy
import itertools
import json

from .lengths import DISTRIBUTIONS
from .workloads import Workload

MODES = ("forward", "forward+backward")
GRID_AXES = ("batch", "hidden_size", "input_size", "num_layers", "bidirectional", "max_len",
             "lengths", "dtype", "cuda_path")
GRID_DEFAULTS = {"batch": 32, "hidden_size": 128, "input_size": 128, "num_layers": 1,
                 "bidirectional": True, "max_len": 64, "lengths": "uniform", "dtype": "float32",
                 "cuda_path": "auto"}
CUDA_PATHS = ("auto", "step", "persistent", "cluster", "cluster-global", "persistent-unstaged")
RUN_KEYS = {"name", "reps", "warmup", "buckets", "modes", "grids", "tf32"}
DTYPES = ("float32", "float64", "float16", "bfloat16")

# The CPU's 21 workloads, both modes: about 5 minutes on 2 idle CPU cores (more when they
# are shared). Every grid runs in both modes, win or lose.
DEFAULT = {
    "name": "default",
    "reps": 7,
    "warmup": 1,
    "buckets": 4,
    "modes": list(MODES),
    "grids": [
        # Speedup against batch, and against hidden size.
        {"batch": [8, 32, 128, 256]},
        {"hidden_size": [64, 128, 256, 512]},
        # Tokens per second against how much the lengths vary (equal: no padding at all).
        {"batch": [32], "hidden_size": [128],
         "lengths": ["equal", "uniform", "lognormal", "sentence"]},
        # The skewed batch (one long sequence, the rest of length 1), scaled from the issue's
        # 100 x 5,000 to 100 x 1,000 steps.
        {"batch": [100], "hidden_size": [128], "max_len": [1000], "lengths": ["skewed"]},
        # Depth and direction, on realistic sentence lengths; then a larger tagger-sized model.
        {"num_layers": [2], "bidirectional": [False, True], "lengths": ["sentence"]},
        {"batch": [64], "hidden_size": [256], "num_layers": [2], "max_len": [128],
         "lengths": ["sentence"]},
        # Other dtypes: float64 everywhere, half precision where fastlstm has it (CUDA).
        {"dtype": ["float64"]},
        {"dtype": ["float16", "bfloat16"], "devices": ["cuda"]},
        # Unidirectional rows where nn.LSTM's own kernels are strongest: small batches, and
        # larger ones with nearly full lengths (little padding for it to waste).
        {"bidirectional": [False], "batch": [8, 16], "max_len": [100, 500]},
        {"bidirectional": [False], "hidden_size": [256, 512], "input_size": [256],
         "max_len": [100], "lengths": ["nearfull"]},
    ],
}

# The larger sweep (`--sweep`): 78 workloads on the CPU (94 on CUDA), each mode; far longer.
SWEEP = {
    "name": "sweep",
    "reps": 7,
    "warmup": 2,
    "buckets": 4,
    "modes": list(MODES),
    "grids": [
        {"batch": [8, 16, 32, 64, 128, 256], "hidden_size": [64, 128, 256, 512],
         "bidirectional": [False, True], "max_len": [128], "lengths": ["uniform"]},
        {"batch": [64], "hidden_size": [256], "max_len": [64, 256],
         "lengths": list(DISTRIBUTIONS)},
        {"batch": [64], "hidden_size": [256], "num_layers": [1, 2, 3],
         "bidirectional": [False, True], "max_len": [128], "lengths": ["sentence", "lognormal"]},
        {"batch": [64], "hidden_size": [256], "input_size": [64, 1024], "max_len": [128],
         "lengths": ["sentence"]},
        {"batch": [32, 128], "hidden_size": [128, 512], "dtype": ["float64"],
         "lengths": ["uniform", "sentence"]},
        {"batch": [32, 128], "hidden_size": [128, 512], "dtype": ["float16", "bfloat16"],
         "lengths": ["uniform", "sentence"], "devices": ["cuda"]},
    ],
}

PRESETS = {"default": DEFAULT, "sweep": SWEEP}


def load(spec):
    """A preset name or the path of a JSON config; returns a checked copy."""
    if spec in PRESETS:
        cfg = copy.deepcopy(PRESETS[spec])
    else:
        with open(spec) as f:
            cfg = json.load(f)
        cfg.setdefault("name", spec.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    check(cfg)
    for key in ("reps", "warmup", "buckets", "modes"):
        cfg.setdefault(key, DEFAULT[key])
    return cfg


def check(cfg):
    unknown = set(cfg) - RUN_KEYS
    if unknown:
        raise ValueError(f"config: unknown keys {sorted(unknown)}; expected some of "
                         f"{sorted(RUN_KEYS)}")
    if not cfg.get("grids"):
        raise ValueError("config: 'grids' must be a non-empty list")
    if cfg.get("tf32") not in (None, True, False):
        raise ValueError(f"config: 'tf32' must be true, false or absent, got {cfg['tf32']!r}")
    for mode in cfg.get("modes", ()):
        if mode not in MODES:
            raise ValueError(f"config: mode must be one of {MODES}, got {mode!r}")
    for i, grid in enumerate(cfg["grids"]):
        unknown = set(grid) - set(GRID_AXES) - {"devices"}
        if unknown:
            raise ValueError(f"config: grid {i} has unknown axes {sorted(unknown)}; expected "
                             f"some of {list(GRID_AXES) + ['devices']}")
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"config: grid {i} axis {axis!r} must be a non-empty list, "
                                 f"got {values!r}")
        for value in grid.get("lengths", ()):
            if value not in DISTRIBUTIONS:
                raise ValueError(f"config: grid {i}: lengths must be one of {DISTRIBUTIONS}, "
                                 f"got {value!r}")
        for value in grid.get("cuda_path", ()):
            if value not in CUDA_PATHS:
                raise ValueError(f"config: grid {i}: cuda_path must be one of {CUDA_PATHS}, "
                                 f"got {value!r}")
        for value in grid.get("dtype", ()):
            if value not in DTYPES:
                raise ValueError(f"config: grid {i}: dtype must be one of {DTYPES}, got "
                                 f"{value!r}")


def workloads(cfg, device_type):
    """The config's workloads for a device type ('cpu' or 'cuda'), in order, without repeats."""
    seen = {}
    for grid in cfg["grids"]:
        if device_type not in grid.get("devices", [device_type]):
            continue
        axes = [grid.get(axis, [GRID_DEFAULTS[axis]]) for axis in GRID_AXES]
        for values in itertools.product(*axes):
            v = dict(zip(GRID_AXES, values))
            seen.setdefault(Workload(**v), None)
    return list(seen)
