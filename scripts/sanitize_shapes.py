"""Small fastlstm calls for compute-sanitizer (memcheck, racecheck, synccheck, initcheck).

Run as: PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \
            --kernel-name kns=fastlstm python scripts/sanitize_shapes.py
Every call does forward and backward. On CUDA the cases cover each path (cases()):
  step             the per-step driver (FASTLSTM_CUDA_PATH=step), lengths on the host;
  persistent       the persistent kernels with a host-built schedule (lengths on the CPU), one
                   case too large for their shared memory on an H100/H200, so that their
                   global-memory weights run too;
  device-schedule  the persistent kernels with lengths on the GPU: the schedule built there
                   (csrc/cuda/device_schedule.cuh), no host sync;
  cluster          thread-block clusters, h and the gate gradients through distributed shared
                   memory; cluster-global the same through global memory (FASTLSTM_CUDA_DSMEM=0);
over uni/bidirectional, projections, no bias, zero and full lengths, and each dtype, small
enough that each tool's run stays short (gpu_session.sh's sanitize stage fits in 120 s).
Each case runs under its own cap (--case-cap): past it, faulthandler prints the stacks and
ends the program, after the line "sanitize_shapes: case K/N LABEL: start" that names it.
The last line, "sanitize_shapes: all N cases ok", says the program ran to the end
(scripts/sanitizer_verdict.py requires it). `--device cpu` runs the cases fastlstm has on the
CPU (no half precision): gpu_session.sh's rehearsal. `--list` prints the cases and exits.
"""

import argparse
import faulthandler
import os
import sys

import torch

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
SHAPES = [
    # (T, B, I, H, layers, bidirectional, proj, bias, dtype, lengths)
    (7, 5, 3, 8, 2, True, 0, True, F32, [7, 0, 3, 1, 7]),          # 0
    (9, 4, 6, 16, 1, False, 4, True, F32, [9, 2, 5, 9]),           # 1 projection
    (5, 3, 4, 8, 1, True, 0, False, F64, [5, 5, 0]),               # 2 float64, no bias
    (6, 4, 8, 16, 2, True, 0, True, F16, [6, 1, 4, 3]),            # 3 float16
    (6, 4, 8, 16, 1, False, 8, True, BF16, [6, 6, 2, 0]),          # 4 bfloat16, projection
    (4, 3, 5, 8, 2, True, 4, True, F32, [0, 0, 0]),                # 5 every length 0
    (3, 2, 4, 1024, 1, True, 0, True, F32, [3, 1]),                # 6 weights beyond shared memory
]
# (label, FASTLSTM_CUDA_PATH, FASTLSTM_CUDA_DSMEM, lengths on the device, SHAPES indices)
CUDA_PATHS = [
    ("step", "step", None, False, [0, 2, 3, 4]),
    ("persistent", "persistent", None, False, [1, 6]),
    ("device-schedule", "persistent", None, True, [0, 3, 5]),
    ("cluster", "cluster", None, True, [0, 4]),
    ("cluster-global", "cluster", "0", True, [1]),
]


def cases(device):
    """[(label, env, lengths_on_device, shape)] for a device ('cuda' or 'cpu')."""
    if device == "cpu":
        return [("cpu", {}, False, s) for s in SHAPES if s[8] not in (F16, BF16)]
    out = []
    for label, path, dsmem, on_device, which in CUDA_PATHS:
        env = {"FASTLSTM_CUDA_PATH": path, "FASTLSTM_CUDA_DSMEM": dsmem}
        out += [(label, env, on_device, SHAPES[i]) for i in which]
    return out


def describe(label, shape):
    T, B, I, H, L, bi, proj, bias, dtype, lengths = shape
    return (f"{label} T={T} B={B} H={H} L={L} bi={bi} proj={proj} bias={bias} "
            f"{str(dtype).replace('torch.', '')}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--case-cap", type=float, default=20.0,
                   help="seconds a case may take before the program is ended (0: none)")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    args = p.parse_args(argv)
    dev = args.device
    todo = cases(dev)
    if args.list:
        print("\n".join(describe(label, shape) for label, _, _, shape in todo))
        return 0
    import fastlstm

    for k, (label, env, on_device, shape) in enumerate(todo, 1):
        T, B, I, H, L, bi, proj, bias, dtype, lengths = shape
        name = describe(label, shape)
        print(f"sanitize_shapes: case {k}/{len(todo)} {name}: start", flush=True)
        if args.case_cap > 0:
            faulthandler.dump_traceback_later(args.case_cap, exit=True, file=sys.stdout)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.manual_seed(0)
        m = fastlstm.LSTM(I, H, L, bias=bias, bidirectional=bi, proj_size=proj, device=dev,
                          dtype=dtype)
        x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
        lens = torch.tensor(lengths, device=dev if on_device else "cpu")
        out, (h, c) = m(x, lengths=lens)
        (out.float().sum() + h.float().sum() + c.float().sum()).backward()
        if dev != "cpu":
            torch.cuda.synchronize()
        faulthandler.cancel_dump_traceback_later()
        print(f"ok {name}", flush=True)
    print(f"sanitize_shapes: all {len(todo)} cases ok on {dev}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
