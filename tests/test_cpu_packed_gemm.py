"""The CPU's float32 time loops multiply by W_hh (and W_hr) packed once per loop in MKL's own
layout (cblas_sgemm_pack / cblas_sgemm_compute) instead of repacking them in every per-step
GEMM; loops shorter than 8 steps keep plain GEMMs. nn.LSTM over packed input is the judge,
with the packing on and off (FASTLSTM_CPU_PACKED_GEMM=0, read at every call);
torch.ops.fastlstm._cpu_packed_gemm_count() shows which GEMMs took the packed path.
"""

import pytest
import torch

import fastlstm
from helpers import assert_close, check_parity, make_pair, random_lengths, reference_forward

F32 = torch.float32
MIN_STEPS = 8  # CpuBackend::kPackedGemmMinSteps

needs_mkl_packing = pytest.mark.skipif(
    not torch.backends.mkl.is_available(), reason="CPU lacks MKL's packed GEMM (torch without MKL)")


def packed_gemms() -> int:
    return torch.ops.fastlstm._cpu_packed_gemm_count()


@pytest.fixture
def packing(monkeypatch):
    """Sets FASTLSTM_CPU_PACKED_GEMM for the test: packing(True) or packing(False)."""
    def set_to(on: bool):
        monkeypatch.setenv("FASTLSTM_CPU_PACKED_GEMM", "1" if on else "0")
    return set_to


def parity_case(num_layers, bidirectional, proj_size, kind, T=12, B=6, seed=0):
    ref, fast = make_pair(5, 7, dtype=F32, num_layers=num_layers, bidirectional=bidirectional,
                          proj_size=proj_size, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths(kind, B, T, gen)
    if max(lengths) < MIN_STEPS:  # a loop long enough to pack
        lengths[0] = T
    x = torch.randn(T, B, 5, generator=gen, dtype=F32)
    D = 2 if bidirectional else 1
    hout = proj_size or 7
    hx = (torch.randn(num_layers * D, B, hout, generator=gen),
          torch.randn(num_layers * D, B, 7, generator=gen))
    return ref, fast, x, lengths, hx


@needs_mkl_packing
@pytest.mark.parametrize("on", [True, False], ids=["packed", "plain"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [
    (1, False, 0), (1, True, 0), (2, True, 0), (2, False, 3), (1, True, 4)])
@pytest.mark.parametrize("kind", ["full", "random", "has_zero"])
def test_training_matches_nn_lstm(packing, on, num_layers, bidirectional, proj_size, kind):
    packing(on)
    ref, fast, x, lengths, hx = parity_case(num_layers, bidirectional, proj_size, kind)
    before = packed_gemms()
    check_parity(ref, fast, x, lengths, hx=hx)
    used = packed_gemms() - before
    assert (used > 0) == on, f"{used} packed GEMMs with FASTLSTM_CPU_PACKED_GEMM={int(on)}"


@needs_mkl_packing
@pytest.mark.parametrize("num_layers,bidirectional,proj_size", [(1, True, 0), (2, False, 3)])
def test_inference_matches_nn_lstm_and_the_plain_loop(packing, num_layers, bidirectional,
                                                      proj_size):
    ref, fast, x, lengths, hx = parity_case(num_layers, bidirectional, proj_size, "has_zero")
    lengths_t = torch.tensor(lengths)
    results = {}
    for on in (True, False):
        packing(on)
        before = packed_gemms()
        with torch.no_grad():
            results[on] = fast(x, hx, lengths=lengths_t)
        assert (packed_gemms() > before) == on
    with torch.no_grad():
        expected = reference_forward(ref, x, lengths, hx)
    for out, (h, c) in results.values():
        for name, a, e in zip(("output", "h_n", "c_n"), (out, h, c), expected):
            assert_close(name, a, e, F32)


@needs_mkl_packing
def test_short_loops_and_other_dtypes_keep_plain_gemms(packing):
    packing(True)
    fast = fastlstm_module(F32)
    before = packed_gemms()
    x = torch.randn(MIN_STEPS - 1, 3, 5)
    fast(x, lengths=torch.tensor([MIN_STEPS - 1, 2, 0]))[0].sum().backward()
    assert packed_gemms() == before, "a loop of 7 steps packed its weights"
    x = torch.randn(MIN_STEPS, 3, 5)
    fast(x, lengths=torch.tensor([MIN_STEPS, 2, 0]))[0].sum().backward()
    assert packed_gemms() > before, "a loop of 8 steps did not pack its weights"
    # float64: MKL has no packed double GEMM here; bfloat16 accumulates through its own GEMM.
    before = packed_gemms()
    for dtype in (torch.float64, torch.bfloat16):
        m = fastlstm_module(dtype)
        m(torch.randn(16, 3, 5, dtype=dtype), lengths=torch.tensor([16, 9, 1]))[0].sum().backward()
    assert packed_gemms() == before


def fastlstm_module(dtype):
    torch.manual_seed(0)
    return fastlstm.LSTM(5, 7, bidirectional=True, dtype=dtype)
