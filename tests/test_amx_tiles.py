"""The bfloat16 AMX step GEMM keeps its tile configuration through a time loop
(csrc/cpu/step_gemm_amx.h, AmxTileHold), and stays right when other AMX code (oneDNN's, MKL's)
runs on the same threads between or inside fastlstm's calls.

nn.LSTM is the judge: fastlstm's bfloat16 error against a float64 run of the same weights is
at most twice nn.LSTM's own bfloat16 error, for every output and gradient (as in
test_half_cpu.py, through the same helpers).
"""

import pytest
import torch

import fastlstm
from helpers import cpu_has, make_pair, max_abs_err, run_judged

F64 = torch.float64

pytestmark = pytest.mark.skipif(not cpu_has("amx_bf16"), reason="CPU lacks AMX-BF16")


@pytest.fixture(autouse=True)
def amx_kernel(monkeypatch):
    monkeypatch.setenv("FASTLSTM_CPU_STEP_GEMM", "own")
    monkeypatch.setenv("FASTLSTM_CPU_BF16_KERNEL", "amx")
    if torch.ops.fastlstm._cpu_isa() == "avx512":
        assert torch.ops.fastlstm._cpu_bf16_kernel() == "amx"


def loads():
    return torch.ops.fastlstm._cpu_amx_tile_config_loads()


def test_one_configuration_per_loop_not_per_step():
    # Equal lengths on one thread: every step multiplies the same 16 rows, so one
    # configuration serves every step (before the hold: a load at every step, T a call). The
    # input projection between chunks of steps (2 chunks here) may run torch's BLAS, which
    # releases the tiles: a load after each.
    T, B, I, H = 30, 16, 32, 64
    lstm = fastlstm.LSTM(I, H).to(torch.bfloat16)
    x = torch.randn(T, B, I, dtype=torch.bfloat16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            lstm(x, lengths=torch.full((B,), T))
            before = loads()
            for _ in range(3):
                lstm(x, lengths=torch.full((B,), T))
    finally:
        torch.set_num_threads(threads)
    assert loads() > before, "the AMX kernel did not run"
    assert loads() - before <= 3 * 2, f"{loads() - before} tile loads for 3 calls of {T} steps"


def bf16_errors(case, interleave, grad):
    """[(name, fastlstm's, nn.LSTM's largest bfloat16 error against float64)] for the output,
    h_n, c_n (and, when grad, the input's and every parameter's gradient), fastlstm called 3
    times with interleave() run before each call (its worst call counts)."""
    T, B, I, H = 24, 10, 32, 48
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[0] = T
    ref64, _ = make_pair(I, H, F64, **case)
    ref, fast = make_pair(I, H, torch.bfloat16, **case)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    D, Hout = 2 if ref.bidirectional else 1, ref.proj_size or H
    x = torch.randn(T, B, I, generator=gen, dtype=F64).to(torch.bfloat16).to(F64)
    hx = (torch.zeros(ref.num_layers * D, B, Hout, dtype=F64),
          torch.zeros(ref.num_layers * D, B, H, dtype=F64))
    half = lambda t: t.to(torch.bfloat16)  # noqa: E731
    exact = run_judged(ref64, x, lengths, hx, grad, fast=False)
    judge = run_judged(ref, half(x), lengths, tuple(map(half, hx)), grad, fast=False)
    worst = [0.0] * len(exact)
    for _ in range(3):
        interleave()
        ours = run_judged(fast, half(x), lengths, tuple(map(half, hx)), grad, fast=True)
        worst = [max(w, max_abs_err(o, e)) for w, o, e in zip(worst, ours, exact)]
    names = ["output", "h_n", "c_n"] + (["grad_x"] + [n for n, _ in ref.named_parameters()]
                                         if grad else [])
    return [(name, w, max_abs_err(j, e)) for name, w, j, e in zip(names, worst, judge, exact)]


def onednn_amx_work():
    # bfloat16 GEMMs and an nn.LSTM, which oneDNN runs on AMX here: they configure the tiles
    # their own way on torch's threads.
    a = torch.randn(64, 256).to(torch.bfloat16)
    (a @ a.T).sum()
    lstm = torch.nn.LSTM(32, 48).to(torch.bfloat16)
    with torch.no_grad():
        lstm(torch.randn(5, 3, 32).to(torch.bfloat16))


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_right_after_other_amx_code(grad):
    errors = bf16_errors(dict(num_layers=2, bidirectional=True), onednn_amx_work, grad)
    for name, ours, judge in errors:
        assert ours <= 2 * judge, f"{name}: fastlstm error {ours:.3e} > 2 x nn.LSTM's {judge:.3e}"


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_right_with_blas_gemms_inside_the_loop(grad, monkeypatch):
    # A projection's per-step GEMM and unpacked input chunks go to torch's BLAS inside the
    # time loop, between the AMX step GEMMs that keep their configuration.
    monkeypatch.setenv("FASTLSTM_CPU_PACKED_INPUT", "0")
    errors = bf16_errors(dict(num_layers=1, bidirectional=True, proj_size=24), lambda: None,
                         grad)
    for name, ours, judge in errors:
        assert ours <= 2 * judge, f"{name}: fastlstm error {ours:.3e} > 2 x nn.LSTM's {judge:.3e}"
