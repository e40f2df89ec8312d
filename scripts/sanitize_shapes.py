"""A representative set of fastlstm calls for compute-sanitizer (memcheck, racecheck, initcheck).

Run as: PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python scripts/sanitize_shapes.py
Every call does forward and backward; shapes cover uni/bidirectional, projections, no bias,
zero and full lengths, and each dtype; on CUDA each case runs on both paths
(FASTLSTM_CUDA_PATH=step and persistent, and two on cluster, where h and the gate gradients
travel through distributed shared memory), and one case is too large for the persistent kernels'
shared memory on an H100/H200, so that their global-memory weights run too. Its last line,
"sanitize_shapes: all N cases ok", says the program ran to the end (scripts/sanitizer_verdict.py requires it). `--device cpu` runs the
cases fastlstm has on the CPU (no half precision): gpu_session.sh's rehearsal.
"""

import argparse
import os

import torch

import fastlstm

CASES = [
    # (T, B, I, H, layers, bidirectional, proj, bias, dtype, lengths)
    (7, 5, 3, 8, 2, True, 0, True, torch.float32, [7, 0, 3, 1, 7]),
    (9, 4, 6, 16, 1, False, 4, True, torch.float32, [9, 2, 5, 9]),
    (5, 3, 4, 8, 1, True, 0, False, torch.float64, [5, 5, 0]),
    (6, 4, 8, 16, 2, True, 0, True, torch.float16, [6, 1, 4, 3]),
    (6, 4, 8, 16, 1, False, 8, True, torch.bfloat16, [6, 6, 2, 0]),
    (4, 3, 5, 8, 2, True, 4, True, torch.float32, [0, 0, 0]),
    (3, 2, 4, 1024, 1, True, 0, True, torch.float32, [3, 1]),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    dev = p.parse_args().device
    cases = [c for c in CASES
             if dev != "cpu" or c[8] not in (torch.float16, torch.bfloat16)]
    paths = ["step", "persistent"] if dev != "cpu" else ["auto"]
    # The cluster barrier (Hopper) on two small cases, fp32 and bf16 (tensor cores): the
    # sanitizers' time is short.
    clustered = [("cluster",) + c for c in (CASES[0], CASES[4])] if dev != "cpu" else []
    cases = [(path,) + c for path in paths for c in cases] + clustered
    for path, T, B, I, H, L, bi, proj, bias, dtype, lengths in cases:
        os.environ["FASTLSTM_CUDA_PATH"] = path
        torch.manual_seed(0)
        m = fastlstm.LSTM(I, H, L, bias=bias, bidirectional=bi, proj_size=proj, device=dev,
                          dtype=dtype)
        x = torch.randn(T, B, I, device=dev, dtype=dtype, requires_grad=True)
        out, (h, c) = m(x, lengths=torch.tensor(lengths, device=dev))
        (out.float().sum() + h.float().sum() + c.float().sum()).backward()
        if dev != "cpu":
            torch.cuda.synchronize()
        print(f"ok {path} T={T} B={B} H={H} L={L} bi={bi} proj={proj} bias={bias} {dtype}",
              flush=True)
    print(f"sanitize_shapes: all {len(cases)} cases ok on {dev}", flush=True)


if __name__ == "__main__":
    main()
