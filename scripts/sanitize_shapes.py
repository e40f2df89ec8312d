"""A representative set of fastlstm calls for compute-sanitizer (memcheck, racecheck, initcheck).

Run as: PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python scripts/sanitize_shapes.py
Every call does forward and backward; shapes cover uni/bidirectional, projections, no bias,
zero and full lengths, and each dtype.
"""

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
]


def main():
    for T, B, I, H, L, bi, proj, bias, dtype, lengths in CASES:
        torch.manual_seed(0)
        m = fastlstm.LSTM(I, H, L, bias=bias, bidirectional=bi, proj_size=proj, device="cuda",
                          dtype=dtype)
        x = torch.randn(T, B, I, device="cuda", dtype=dtype, requires_grad=True)
        out, (h, c) = m(x, lengths=torch.tensor(lengths, device="cuda"))
        (out.float().sum() + h.float().sum() + c.float().sum()).backward()
        torch.cuda.synchronize()
        print(f"ok T={T} B={B} H={H} L={L} bi={bi} proj={proj} bias={bias} {dtype}", flush=True)


if __name__ == "__main__":
    main()
