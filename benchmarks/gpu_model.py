"""A per-step cost model of fastlstm's persistent CUDA kernels, for a GPU we cannot time here.

Two halves (docs/GPU_COST_MODEL.md):
  - the work one block does in one step (bytes of shared memory, FMAs, shuffles, mma
    instructions), counted from the kernels' design. tests/test_emulated_work_counts.py pins
    these counts against what the emulator counts when it runs the kernels, at the emulated
    device's size (2 warps a block, a few multiprocessors);
  - a time for that work on an H100 SXM5, from public figures: the largest of the block's
    throughput bounds, plus the latencies on its busiest warp's path, plus the step's barriers.

python -m benchmarks --gpu-model prints the prediction for the GPU session's grid.
"""

from dataclasses import dataclass

FLOAT = 4  # bytes of the fp32 accumulators and scratch


@dataclass(frozen=True)
class Device:
    """A GPU as the model sees it. Each figure's source: docs/GPU_COST_MODEL.md."""
    name: str
    sms: int
    warps: int                      # per persistent block (kPersistentThreads / 32)
    clock_ghz: float = 1.755
    fma_per_clk: tuple = (("float32", 128), ("float64", 64))  # scalar FMAs per SM
    tensor_fma_per_s: float = 989.4e12 / 2 / 132                # bf16 dense, per SM
    shared_bytes_per_clk: int = 128
    l2_bytes_per_clk: float = 8986e9 / 1.755e9  # the whole L2 (8986 GB/s at 1755 MHz)
    shuffles_per_clk: int = 1       # warp-level, per SM
    shared_latency: int = 20        # cycles
    l2_latency: int = 200
    alu_latency: int = 4
    mma_latency: int = 32           # assumed (docs/GPU_COST_MODEL.md)
    cell_cycles: int = 80           # assumed: ~20 dependent ALU and MUFU operations


H100 = Device("H100 SXM5", sms=132, warps=8)
EMULATED = Device("emulated", sms=6, warps=2)  # csrc/simt: 64 threads a block


@dataclass
class Work:
    """One block's work in one product of one step, and its busiest warp's path."""
    shared_read: int = 0   # bytes
    shared_write: int = 0
    shuffles: int = 0      # warp-level
    fma: int = 0           # scalar FMAs
    mma: int = 0           # m16n8k16 (or m16n8k8 TF32) instructions
    turns: int = 0         # dependent loop turns (k values per lane, or mma) of the busiest warp
    reduction: int = 0     # dependent shuffles at its end
    split: bool = False    # a K split: two __syncthreads and a trip through the scratch
    l2_read: int = 0       # bytes of A (h_{t-1}, or the gate gradients) read from L2


def ceil_div(a, b):
    return -(-a // b)


def block_units(H, blocks):
    """Units of each block of a direction (csrc/cuda/persistent.cuh, block_units)."""
    U = ceil_div(H, blocks)
    return [max(0, min(H, (jb + 1) * U) - min(H, jb * U)) for jb in range(blocks)]


def rows_per_item(rows, cols, warps):
    """csrc/cuda/warp_dot.cuh: the largest of 8, 4, 2, 1 that gives every warp an item."""
    for R in (8, 4, 2):
        if ceil_div(rows, R) * cols >= warps:
            return R
    return 1


def spread_shuffles(N):
    """Shuffles of one transposing reduction of N totals over a warp (warp_spread_sum)."""
    return N - 1 + 5 - (N.bit_length() - 1)


def dot_items(rows, cols, K, C, elem_bytes, warps):
    """The FMA loops (warp_dot_items): rows x cols items of R rows, each reading its C weight
    rows of K values once from shared memory; where the items are fewer than the warps, the
    warps split K (64 values at least each) and add up through the scratch (one lane per total
    writes, every lane of the item's first warp reads)."""
    R = rows_per_item(rows, cols, warps)
    items = ceil_div(rows, R) * cols
    splits = 1
    if R == 1 and 0 < items < warps:
        splits = min(warps // items, ceil_div(K, 64))
    N = R * C
    return Work(shared_read=items * C * K * elem_bytes + items * (splits - 1) * 32 * FLOAT,
                shared_write=items * (splits - 1) * N * FLOAT,
                shuffles=items * splits * spread_shuffles(N),
                fma=rows * cols * C * K,
                turns=ceil_div(items * splits, warps) * ceil_div(ceil_div(K, splits), 32),
                reduction=ceil_div(items * splits, warps) * spread_shuffles(N),
                split=splits > 1)


def padded_ld(C, elem_bytes):
    """A row of C values in shared memory (csrc/cuda/persistent.cuh, padded_ld)."""
    per_32 = 32 // elem_bytes
    return ceil_div(C, per_32) * per_32 + 16 // elem_bytes


STAGE_ROWS = 64  # kDefaultStageRows in csrc/cuda/persistent.cuh (FASTLSTM_CUDA_STAGE)


def mma_products(rows, cols, K, k_step, warps, elem_bytes, staged=True, stage_rows=STAGE_ROWS):
    """The tensor-core products (block_mma_products): 16 x 8 tiles, K in steps of k_step; where
    the tiles are fewer than the warps, the warps split K and the later parts leave their
    fragments (32 lanes x 4 floats) in the scratch. Shared reads: the scratch, the B operand
    (the resident weights) and, staged, the A operand: at every mma each row of A present in
    the tile is read by 4 lanes, two 32-bit words each, and so is each column of B (rows or
    columns past the edge are not read). staged: A's rows (from global memory) are first copied
    into shared memory, stage_rows at a time, each a product of its own, zero-padded to K
    rounded up to k_step (staged_mma_products)."""
    if staged and rows > stage_rows:
        total = Work()
        for r0 in range(0, rows, stage_rows):
            w = mma_products(min(stage_rows, rows - r0), cols, K, k_step, warps, elem_bytes)
            total = Work(total.shared_read + w.shared_read, total.shared_write + w.shared_write,
                         mma=total.mma + w.mma, turns=total.turns + w.turns,
                         split=total.split or w.split)
        return total
    row_tiles, col_tiles = ceil_div(rows, 16), ceil_div(cols, 8)
    tiles = row_tiles * col_tiles
    k_steps = ceil_div(K, k_step)
    splits = min(warps // tiles, k_steps) if 0 < tiles < warps else 1
    splits = max(splits, 1)
    scratch = tiles * (splits - 1) * 32 * 4 * FLOAT
    operands = k_steps * 32 * ((rows * col_tiles if staged else 0) + cols * row_tiles)
    stage = rows * k_steps * k_step * elem_bytes if staged and tiles else 0
    return Work(shared_read=scratch + operands, shared_write=scratch + stage,
                mma=tiles * k_steps,
                turns=ceil_div(tiles * splits, warps) * ceil_div(k_steps, splits),
                split=splits > 1)


def step_products(pass_, dtype, rows, units, H, device, tf32=False, staged=True,
                  stage_rows=STAGE_ROWS):
    """The product of one block's step: forward, its units' 4 gate rows times h_{t-1}
    (K = H); backward phase B, its output units' W_hh columns times the gate gradients
    (K = 4H). No projection; weights resident; staged: the 16-bit tensor-core products stage
    A (FASTLSTM_CUDA_STAGE, on by default; TF32 reads it from global memory)."""
    tensor = dtype in ("bfloat16", "float16") or (dtype == "float32" and tf32)
    cols, C, K = (units, 4, H) if pass_ == "forward" else (units, 1, 4 * H)
    elem = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}[dtype]
    if tensor:
        w = mma_products(rows, cols * C, K, 8 if dtype == "float32" else 16, device.warps, elem,
                         staged and elem == 2, stage_rows)
    else:
        w = dot_items(rows, cols, K, C, elem, device.warps)
    # A's rows come from global memory every step, written by every block of the step before:
    # each block reads all of them from L2 once (its L1 assumed to catch its own re-reads).
    w.l2_read = rows * K * elem
    return w


def step_cycles(w, dtype, rows, units, blocks, device):
    """Cycles of one block's step, by name: ({throughput bounds}, {path latencies}, {barrier}).
    The step is the largest throughput bound (the SM's shared-memory, FMA, tensor-core and
    shuffle rates for the block's whole work, and its share of the L2's bandwidth, every SM
    reading at once, for A's rows) plus the path of its busiest warp (h_{t-1} from L2, the
    loop's dependent turns, the reduction's shuffles, a K split's trip through the scratch, then
    the cells) plus the barrier."""
    clk = device.clock_ghz * 1e9
    fma_rate = dict(device.fma_per_clk).get(dtype, 128)
    throughput = {"shared": (w.shared_read + w.shared_write) / device.shared_bytes_per_clk,
                  "fma": w.fma / fma_rate,
                  "tensor": w.mma * 2048 * clk / device.tensor_fma_per_s,
                  "shuffle": w.shuffles / device.shuffles_per_clk,
                  "l2": w.l2_read / (device.l2_bytes_per_clk / device.sms)}
    path = {"l2": device.l2_latency,
            "shared": device.shared_latency,
            "loop": w.turns * (device.mma_latency if w.mma else device.alu_latency),
            "reduction": w.reduction * device.shared_latency,
            "split": 4 * device.shared_latency if w.split else 0,
            "cells": ceil_div(rows * units, 32 * device.warps) * device.cell_cycles}
    # The grid barrier (csrc/cuda/grid_barrier.cuh): __syncthreads, a fence, an atomic add in
    # L2, polling until every block's add is seen, a fence, __syncthreads; the direction's
    # blocks' adds to one counter taken one per clock (assumed).
    barrier = {"barrier": 3 * device.l2_latency + 2 * device.shared_latency + blocks}
    return throughput, path, barrier


def predict_step_us(pass_, dtype, B, H, D, device=H100, tf32=False):
    """Predicted µs per step with every one of B rows active: the block with the most units."""
    blocks = min(H, device.sms // D)
    units = max(block_units(H, blocks))
    w = step_products(pass_, dtype, B, units, H, device, tf32)
    bounds, paths, barriers = step_cycles(w, dtype, B, units, blocks, device)
    throughput, path, barrier = (max(bounds.values()), sum(paths.values()),
                                 sum(barriers.values()))
    return {"us": (throughput + path + barrier) / (device.clock_ghz * 1e3),
            "throughput_us": throughput / (device.clock_ghz * 1e3),
            "path_us": path / (device.clock_ghz * 1e3),
            "barrier_us": barrier / (device.clock_ghz * 1e3),
            "bound": max(bounds, key=bounds.get),
            "units": units, "blocks_per_dir": blocks}


# The targets (µs per step), where one is set: (dtype, H, B, D) -> µs.
TARGETS = {("bfloat16", 256, 16, 1): 3.0, ("bfloat16", 256, 16, 2): 3.0,
           ("float32", 256, 16, 1): 4.0, ("bfloat16", 512, 64, 2): 6.0}

GRID = [(dtype, H, B, D) for dtype in ("float32", "bfloat16") for H in (256, 512)
        for B in (1, 16, 64) for D in (1, 2)]


def table(device=H100):
    """Markdown rows: the prediction for the GPU session's grid, forward and backward."""
    lines = ["| dtype | H | B | dirs | forward µs/step (bound) | backward µs/step (bound) | "
             "target | cuDNN published |", "|---|---|---|---|---|---|---|---|"]
    for dtype, H, B, D in GRID:
        f = predict_step_us("forward", dtype, B, H, D, device)
        b = predict_step_us("backward", dtype, B, H, D, device)
        target = TARGETS.get((dtype, H, B, D))
        lines.append(f"| {dtype} | {H} | {B} | {D} | {f['us']:.2f} ({f['bound']}) | "
                     f"{b['us']:.2f} ({b['bound']}) | "
                     f"{'≤ %.0f' % target if target else '—'} | — |")
    return "\n".join(lines)


def main():
    print(f"Predicted per-step time of the persistent kernels on an {H100.name} "
          f"(benchmarks/gpu_model.py, docs/GPU_COST_MODEL.md); a model, not a measurement.")
    print("Every row active; grid path, weights resident, no projection.\n")
    print(table())
    print("\ncuDNN publishes no per-step figure for these shapes; the GPU session measures "
          "both (scripts/gpu_session.sh).")
