"""The per-step product of a CPU time loop, fastlstm's own kernel against MKL's GEMM, as a
fraction of this machine's float32 FMA peak on one thread.

    python -m benchmarks.step_gemm [--rows 1 4 8 16 32] [--hidden 64 128 256 512] [--seconds 0.2]
                                   [--dtype float32 bfloat16 float16]

Each cell is one thread multiplying M rows by a weight packed once, as every step of a layer's
time loop does (csrc/cpu/step_gemm.cpp, csrc/cpu/step_gemm_timing.cpp): the forward's
h [M, H] W_hh^T [H, 4H] and the backward's dgates [M, 4H] W_hh [4H, H]. The two kernels run
interleaved, REPEATS times each, and the table shows each one's median. The auto choice of
csrc/cpu/backend.h (FASTLSTM_CPU_STEP_GEMM) comes from these figures. In bfloat16 and float16 (A
and W in that dtype, sums in float32) MKL's GEMM packs W in every call, and fastlstm's kernel is
the one torch.ops.fastlstm._cpu_bf16_kernel() names for bfloat16 (AMX tiles can pass the FMA
peak: the column is a fraction of the float32 FMA's).
"""

import argparse
import statistics

import torch

import fastlstm  # noqa: F401  (loads the ops)
from benchmarks.roofline import calibrate

REPEATS = 5


def gflops(M, H, backward, how, seconds, dtype="float32"):
    N, K = (H, 4 * H) if backward else (4 * H, H)
    return torch.ops.fastlstm._cpu_step_gemm_gflops(M, N, K, not backward, how, seconds, dtype)


def measure(rows, hidden, seconds, dtypes=("float32",)):
    """[(dtype, pass, H, M, own GFLOP/s, blas GFLOP/s)], medians of interleaved runs."""
    out = []
    for dtype in dtypes:
        for backward in (False, True):
            for H in hidden:
                for M in rows:
                    runs = {"own": [], "blas": []}
                    for _ in range(REPEATS):
                        for how in runs:
                            runs[how].append(gflops(M, H, backward, how, seconds, dtype))
                    out.append((dtype, "backward" if backward else "forward", H, M,
                                statistics.median(runs["own"]), statistics.median(runs["blas"])))
    return out


def table(results, peak):
    lines = [f"FMA peak on 1 thread: {peak:.0f} GFLOP/s ({torch.ops.fastlstm._cpu_isa()}); "
             f"MKL's packed GEMM available: {torch.ops.fastlstm._cpu_packed_gemm_available()}; "
             f"bfloat16 kernel: {torch.ops.fastlstm._cpu_bf16_kernel()}",
             "",
             "| dtype | pass | H | rows | own GFLOP/s | own % peak | MKL GFLOP/s | MKL % peak "
             "| own / MKL |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for dtype, pas, H, M, own, blas in results:
        lines.append(f"| {dtype} | {pas} | {H} | {M} | {own:.1f} | {100 * own / peak:.0f}% | "
                     f"{blas:.1f} | {100 * blas / peak:.0f}% | {own / blas:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--seconds", type=float, default=0.2, help="per measurement")
    p.add_argument("--dtype", nargs="+", default=["float32"],
                   choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    peak = calibrate()["peak_gflops_1thread"]
    # One thread for both: MKL would otherwise spread a large product over torch's threads,
    # while in a time loop each thread runs its own rows' products (csrc/cpu/partition.h).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = measure(args.rows, args.hidden, args.seconds, args.dtype)
    finally:
        torch.set_num_threads(threads)
    print(table(results, peak))


if __name__ == "__main__":
    main()
