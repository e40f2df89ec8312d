"""The bfloat16 AMX step GEMM keeps its tile configuration through a time loop
(csrc/cpu/step_gemm_amx.h, AmxTileHold), and stays right when other AMX code (oneDNN's, MKL's)
runs on the same threads between or inside fastlstm's calls.

nn.LSTM is the judge: fastlstm's bfloat16 error against a float64 run of the same weights is
at most twice nn.LSTM's own bfloat16 error (as in test_half_cpu.py).
"""

import pytest
import torch

import fastlstm
from helpers import cpu_has, make_pair, reference_forward

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
    """{name: (fastlstm's, nn.LSTM's) largest bfloat16 error against float64} for the output
    (and, when grad, the input's gradient), fastlstm called 3 times with interleave() run
    before each call."""
    T, B, I, H = 24, 10, 32, 48
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[0] = T
    ref64, _ = make_pair(I, H, F64, **case)
    ref, fast = make_pair(I, H, torch.bfloat16, **case)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    x = torch.randn(T, B, I, generator=gen, dtype=F64).to(torch.bfloat16)

    def results(run, x):
        x = x.detach().clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            out = run(x)
        if not grad:
            return {"output": out}
        out.float().sum().backward()
        return {"output": out, "grad_x": x.grad}

    exact = results(lambda v: reference_forward(ref64, v, lengths)[0], x.to(F64))
    judge = results(lambda v: reference_forward(ref, v, lengths)[0], x)
    worst = {}
    for _ in range(3):
        interleave()
        ours = results(lambda v: fast(v, lengths=torch.tensor(lengths))[0], x)
        for name, value in ours.items():
            err = (value.double() - exact[name].double()).abs().max().item()
            worst[name] = max(worst.get(name, 0.0), err)
    return {name: (worst[name], (judge[name].double() - exact[name].double()).abs().max().item())
            for name in worst}


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
    for name, (ours, judge) in errors.items():
        assert ours <= 2 * judge, f"{name}: fastlstm error {ours:.3e} > 2 x nn.LSTM's {judge:.3e}"


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_right_with_blas_gemms_inside_the_loop(grad, monkeypatch):
    # A projection's per-step GEMM and unpacked input chunks go to torch's BLAS inside the
    # time loop, between the AMX step GEMMs that keep their configuration.
    monkeypatch.setenv("FASTLSTM_CPU_PACKED_INPUT", "0")
    errors = bf16_errors(dict(num_layers=1, bidirectional=True, proj_size=24), lambda: None,
                         grad)
    for name, (ours, judge) in errors.items():
        assert ours <= 2 * judge, f"{name}: fastlstm error {ours:.3e} > 2 x nn.LSTM's {judge:.3e}"
