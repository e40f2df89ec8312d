"""With FASTLSTM_CPU_STEP_GEMM=blas, the CPU's float32 time loops multiply by W_hh (and W_hr)
packed once per loop in MKL's own layout (cblas_sgemm_pack / cblas_sgemm_compute) instead of repacking them in every per-step
GEMM. Loops under 8 steps and weights under 4H x H at H = 64 elements keep plain GEMMs.
nn.LSTM over packed input is the judge, with the packing on and off
(FASTLSTM_CPU_PACKED_GEMM=0, read at every call); torch.ops.fastlstm._cpu_packed_gemm_count()
shows which GEMMs took the packed path. Where torch's BLAS lacks the packed API, the same tests
require the plain path instead.
"""

import platform

import pytest
import torch

import fastlstm
from helpers import assert_close, check_parity, make_pair, random_lengths, reference_forward

F32 = torch.float32
MIN_STEPS = 8  # CpuBackend::kPackedGemmMinSteps
MIN_ELEMENTS = 4 * 64 * 64  # CpuBackend::kPackedGemmMinElements: W_hh of H = 64
AVAILABLE = torch.ops.fastlstm._cpu_packed_gemm_available()


def packed_gemms() -> int:
    return torch.ops.fastlstm._cpu_packed_gemm_count()


@pytest.fixture(autouse=True)
def blas_step_gemm(monkeypatch):
    """These tests are about MKL's packed path: the per-step GEMMs through the BLAS, not
    fastlstm's own (tests/test_cpu_step_gemm.py)."""
    monkeypatch.setenv("FASTLSTM_CPU_STEP_GEMM", "blas")


@pytest.fixture
def packing(monkeypatch):
    """Sets FASTLSTM_CPU_PACKED_GEMM for the test: packing(True) or packing(False)."""
    def set_to(on: bool):
        monkeypatch.setenv("FASTLSTM_CPU_PACKED_GEMM", "1" if on else "0")
    return set_to


def test_mkl_builds_have_the_packed_gemm():
    # torch's x86 wheels carry MKL, whose packed GEMM the CPU path uses: if this fails, the
    # symbols stopped resolving and every float32 loop silently went back to sgemm_.
    if torch.backends.mkl.is_available() and platform.machine() in ("x86_64", "AMD64"):
        assert AVAILABLE
    else:
        assert AVAILABLE in (True, False)


def parity_case(num_layers, bidirectional, proj_size, kind, H, T=12, B=6, seed=0):
    ref, fast = make_pair(5, H, dtype=F32, num_layers=num_layers, bidirectional=bidirectional,
                          proj_size=proj_size, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths(kind, B, T, gen)
    if max(lengths) < MIN_STEPS:  # a loop long enough to pack
        lengths[0] = T
    x = torch.randn(T, B, 5, generator=gen, dtype=F32)
    D = 2 if bidirectional else 1
    hx = (torch.randn(num_layers * D, B, proj_size or H, generator=gen) * 0.5,
          torch.randn(num_layers * D, B, H, generator=gen) * 0.5)
    return ref, fast, x, lengths, hx


# (layers, bidirectional, proj_size, H): with proj_size 64 at H = 256, W_hh (1024 x 64) and W_hr
# (64 x 256) are both packed; with proj_size 32 at H = 128, W_hh (512 x 32) is, and W_hr
# (32 x 128) is too small and stays plain.
SHAPES = [(1, False, 0, 64), (1, True, 0, 64), (2, True, 0, 64), (2, False, 64, 256),
          (1, True, 64, 256), (1, True, 32, 128)]


@pytest.mark.parametrize("on", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size,H", SHAPES)
@pytest.mark.parametrize("kind", ["full", "random", "has_zero"])
def test_training_matches_nn_lstm(packing, on, num_layers, bidirectional, proj_size, H, kind):
    packing(on)
    ref, fast, x, lengths, hx = parity_case(num_layers, bidirectional, proj_size, kind, H)
    before = packed_gemms()
    check_parity(ref, fast, x, lengths, hx=hx)
    used = packed_gemms() - before
    assert (used > 0) == (on and AVAILABLE), f"{used} packed GEMMs, FASTLSTM_CPU_PACKED_GEMM={int(on)}"


@pytest.mark.parametrize("num_layers,bidirectional,proj_size,H", [(1, True, 0, 64),
                                                                  (2, False, 64, 256)])
def test_inference_matches_nn_lstm_packed_or_not(packing, num_layers, bidirectional, proj_size,
                                                 H):
    ref, fast, x, lengths, hx = parity_case(num_layers, bidirectional, proj_size, "has_zero", H)
    with torch.no_grad():
        expected = reference_forward(ref, x, lengths, hx)
    for on in (True, False):
        packing(on)
        before = packed_gemms()
        with torch.no_grad():
            out, (h, c) = fast(x, hx, lengths=torch.tensor(lengths))
        assert (packed_gemms() > before) == (on and AVAILABLE)
        for name, a, e in zip(("output", "h_n", "c_n"), (out, h, c), expected):
            assert_close(name, a, e, F32)


def run(dtype, T, lengths, H=64):
    torch.manual_seed(0)
    m = fastlstm.LSTM(5, H, bidirectional=True, dtype=dtype)
    before = packed_gemms()
    m(torch.randn(T, len(lengths), 5, dtype=dtype), lengths=torch.tensor(lengths))[0].sum() \
        .backward()
    return packed_gemms() - before


def test_only_long_loops_and_large_float32_weights_pack(packing):
    packing(True)
    assert run(F32, MIN_STEPS - 1, [MIN_STEPS - 1, 2, 0]) == 0, "a 7-step loop packed"
    assert (run(F32, MIN_STEPS, [MIN_STEPS, 2, 0]) > 0) == AVAILABLE, "an 8-step loop"
    assert 4 * 63 * 63 < MIN_ELEMENTS <= 4 * 64 * 64
    assert run(F32, 16, [16, 9, 1], H=63) == 0, "W_hh of H = 63 packed"
    # The packed path is float32 only: float64 and the half types keep their GEMMs.
    for dtype in (torch.float64, torch.bfloat16):
        assert run(dtype, 16, [16, 9, 1]) == 0, dtype


@pytest.mark.parametrize("step_gemm", [None, "blas"], ids=["own", "blas"])
@pytest.mark.parametrize("setting", [None, "0"], ids=["default", "off"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_float32_inference_packs_w_ih_once_for_its_chunks(step_gemm, setting, bidirectional,
                                                          monkeypatch, threads):
    """A float32 inference projects its inputs in chunks of steps (CpuBackend::input_weight):
    with at least 4 chunks, W_ih is packed once per direction for all of them, however many row
    groups share it, unless FASTLSTM_CPU_PACKED_INPUT=0. With the default step GEMM it is packed
    for fastlstm's own kernel, so no chunk goes through MKL's packed GEMM; with
    FASTLSTM_CPU_STEP_GEMM=blas, in MKL's layout where MKL has it. The output matches nn.LSTM
    over packed input either way."""
    if step_gemm is None:
        monkeypatch.delenv("FASTLSTM_CPU_STEP_GEMM")  # the default per-step GEMM: own
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    if setting is not None:
        monkeypatch.setenv("FASTLSTM_CPU_PACKED_INPUT", setting)
    threads(2)
    T, B, I, H = 64, 16, 32, 128  # 1024 tokens, chunks of 128 rows: 8 chunks
    D = 2 if bidirectional else 1
    gen = torch.Generator().manual_seed(3)
    lengths = [T] * 4 + random_lengths("has_zero", B - 4, T, gen)
    assert sum(lengths) >= 4 * 128
    ref, fast = make_pair(I, H, F32, bidirectional=bidirectional)
    x = torch.randn(T, B, I, generator=gen)
    inputs, gemms = torch.ops.fastlstm._cpu_packed_input_count(), packed_gemms()
    with torch.no_grad():
        out, (h_n, c_n) = fast(x, lengths=lengths)
        want = reference_forward(ref, x, lengths)
    packed_inputs = torch.ops.fastlstm._cpu_packed_input_count() - inputs
    if setting == "0" or (step_gemm == "blas" and not AVAILABLE):
        assert packed_inputs == 0
    else:
        assert packed_inputs == D, f"W_ih packed {packed_inputs} times for {D} directions"
    if step_gemm is None:  # W_hh and W_ih both in fastlstm's own panels: MKL's packed GEMM idle
        assert packed_gemms() == gemms
    elif setting is None and AVAILABLE:
        assert packed_gemms() - gemms >= 4 * D  # the chunks' projections
    for name, got, expected in zip(["output", "h_n", "c_n"], (out, h_n, c_n), want):
        assert_close(name, got, expected, F32)
