"""fastlstm's own per-step GEMM (csrc/cpu/step_gemm.cpp): op(W) packed once per layer
call into column panels, then tiles of rows x panel width accumulated in registers. It has
AVX-512 (12 x 32 tiles), AVX2 (6 x 16) and portable (4 x 16) variants; tests/test_cpu_isa.py runs
this file under each. bfloat16 and float16 loops go through the same float tiles with their
operands widened, or, for bfloat16, an AVX512_BF16 kernel on pairs of k or AMX tiles.

The product itself is checked against float64 matmul on shapes that leave every remainder: rows
not a multiple of the tile's (13, 25 and 26 also take AVX-512's even row tiles), columns not a
multiple of the panel's, K of 1 and of two K blocks (1000), row strides wider than K, beta 0
(C's NaNs ignored), 1 and 0.5, with every packed weight starting as NaN bytes
(FASTLSTM_CPU_POISON_PACKS=1), so that padding the pack does not zero shows. Then whole layers
against nn.LSTM with the step GEMM forced each way (FASTLSTM_CPU_STEP_GEMM=own|blas, read at
every call), and _cpu_step_gemm_count() shows which ran.
"""

import os

import pytest
import torch

import fastlstm
from helpers import (assert_close, check_parity, cpu_has, make_pair, random_lengths,
                     reference_forward)

F32 = torch.float32
MIN_STEPS = 2  # CpuBackend::kOwnGemmMinSteps


def step_gemms() -> int:
    return torch.ops.fastlstm._cpu_step_gemm_count()


def product(M, N, K, trans, beta, row_stride, seed):
    gen = torch.Generator().manual_seed(seed)
    a_store = torch.randn(M, row_stride, generator=gen)
    a = a_store[:, :K]  # rows row_stride apart
    w = torch.randn((N, K) if trans else (K, N), generator=gen)
    c = torch.randn(M, N, generator=gen)
    if beta == 0:
        c.fill_(float("nan"))  # beta 0 must not read C
    got = torch.ops.fastlstm._cpu_step_gemm(a, w, trans, beta, c)
    w64 = w.double().t() if trans else w.double()
    expected = a.double() @ w64
    if beta != 0:
        expected = expected + beta * c.double()
    return got, expected, K


@pytest.mark.parametrize("M", [1, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 25, 26, 33])
@pytest.mark.parametrize("N,K", [(1, 1), (15, 7), (16, 16), (17, 64), (32, 33), (33, 100),
                                 (100, 64), (256, 65), (40, 1000)])
@pytest.mark.parametrize("trans", [True, False], ids=["wT", "w"])
def test_product_matches_float64(M, N, K, trans, monkeypatch):
    monkeypatch.setenv("FASTLSTM_CPU_POISON_PACKS", "1")  # packs start as NaN: padding shows
    # a row stride of 1024 floats takes the path that copies A (4 KB-aliased rows)
    for beta, row_stride in ((0.0, K), (1.0, K + 5), (0.5, K), (1.0, 1024)):
        got, expected, _ = product(M, N, K, trans, beta, row_stride, seed=M * 1000 + N + K)
        assert got.shape == (M, N)
        assert torch.isfinite(got).all(), f"beta={beta}: NaN in the result"
        # float32 products of K terms of |a w| ~ 1: error ~ sqrt(K) ulps of the sum's size.
        err = (got.double() - expected).abs().max().item()
        assert err <= 2e-6 * (K ** 0.5) * (1 + expected.abs().max().item()), (beta, err)


# bfloat16 and float16 through step_gemm_lowp: float panels (both dtypes), and bfloat16's own
# kernels where the CPU has them (FASTLSTM_CPU_BF16_KERNEL forces each): pairs of k on
# AVX512_BF16, AMX tiles on AMX-BF16.
LOWP = [(torch.bfloat16, "float"), (torch.bfloat16, "pairs"), (torch.bfloat16, "amx"),
        (torch.float16, "float")]
NEEDS = {"pairs": "avx512_bf16", "amx": "amx_bf16"}


def force_bf16_kernel(monkeypatch, kernel):
    """FASTLSTM_CPU_BF16_KERNEL=kernel, skipping where the CPU lacks it; checks it took."""
    if kernel in NEEDS and not cpu_has(NEEDS[kernel]):
        pytest.skip(f"CPU lacks {NEEDS[kernel]} (the {kernel} kernel)")
    monkeypatch.setenv("FASTLSTM_CPU_BF16_KERNEL", kernel)
    if "FASTLSTM_CPU_ISA" not in os.environ and torch.ops.fastlstm._cpu_isa() == "avx512":
        assert torch.ops.fastlstm._cpu_bf16_kernel() == kernel  # else: float panels


# Rows 17 and 33 leave part-filled AMX row tiles (16 rows), K = 65 and 100 part-filled k tiles
# (32 values), N = 100 a part-filled 64-column chunk.
@pytest.mark.parametrize("M", [1, 5, 8, 9, 13, 17, 33])
@pytest.mark.parametrize("N,K", [(1, 1), (15, 7), (33, 100), (100, 65), (64, 1024)])
@pytest.mark.parametrize("trans", [True, False], ids=["wT", "w"])
@pytest.mark.parametrize("dtype,kernel", LOWP, ids=lambda v: str(v).split(".")[-1])
def test_lowp_product_matches_float64(dtype, kernel, M, N, K, trans, monkeypatch):
    force_bf16_kernel(monkeypatch, kernel)
    # Packs start as NaN (FASTLSTM_CPU_POISON_PACKS): K padding the pack leaves unzeroed shows.
    monkeypatch.setenv("FASTLSTM_CPU_POISON_PACKS", "1")
    gen = torch.Generator().manual_seed(M * 1000 + N + K)
    # odd K leaves a half pair; a row stride of K + 3 (odd) leaves A's pairs unaligned
    for beta, row_stride in ((0.0, K), (1.0, K + 3), (0.5, 2048)):
        a = torch.randn(M, row_stride, generator=gen).to(dtype)[:, :K]
        w = torch.randn((N, K) if trans else (K, N), generator=gen).to(dtype)
        c = torch.randn(M, N, generator=gen)
        if beta == 0:
            c.fill_(float("nan"))
        got = torch.ops.fastlstm._cpu_step_gemm(a, w, trans, beta, c)
        # The products of the dtype's values are exact in float: only the float sums round.
        expected = a.double() @ (w.double().t() if trans else w.double())
        if beta != 0:
            expected = expected + beta * c.double()
        assert got.dtype == F32 and got.shape == (M, N)
        assert torch.isfinite(got).all(), f"beta={beta}: NaN in the result"
        err = (got.double() - expected).abs().max().item()
        assert err <= 2e-6 * (K ** 0.5) * (1 + expected.abs().max().item()), (beta, err)


def test_product_of_empty_shapes():
    a = torch.randn(0, 8)
    out = torch.ops.fastlstm._cpu_step_gemm(a, torch.randn(8, 5), False, 0.0, torch.empty(0, 5))
    assert out.shape == (0, 5)
    # K = 0: C = beta C
    c = torch.randn(3, 4)
    out = torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 0), torch.randn(0, 4), False, 0.5, c)
    torch.testing.assert_close(out, 0.5 * c)


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="a must be float32, bfloat16 or float16, got .*Double"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4).double(), torch.randn(4, 5), False,
                                          0.0, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="w must be .*BFloat16.* like a, got .*Float"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4).bfloat16(), torch.randn(4, 5), False,
                                          0.0, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="c must be float32"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4).half(), torch.randn(4, 5).half(),
                                          False, 0.0, torch.zeros(3, 5).half())
    with pytest.raises(ValueError, match="a must be a 2-D CPU matrix"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4, 1), torch.randn(4, 5), False,
                                          0.0, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="op\\(w\\) must have 4 rows"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4), torch.randn(5, 5), False, 0.0,
                                          torch.zeros(3, 5))
    with pytest.raises(ValueError, match="c must be \\[3, 5\\]"):
        torch.ops.fastlstm._cpu_step_gemm(torch.randn(3, 4), torch.randn(4, 5), False, 0.0,
                                          torch.zeros(3, 4))


@pytest.fixture
def step_gemm(monkeypatch):
    """step_gemm("own") or step_gemm("blas"): FASTLSTM_CPU_STEP_GEMM for the test."""
    return lambda how: monkeypatch.setenv("FASTLSTM_CPU_STEP_GEMM", how)


def case(num_layers, bidirectional, proj_size, H, kind, B=7, T=11, seed=0):
    ref, fast = make_pair(5, H, dtype=F32, num_layers=num_layers, bidirectional=bidirectional,
                          proj_size=proj_size, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = random_lengths(kind, B, T, gen)
    x = torch.randn(T, B, 5, generator=gen)
    D = 2 if bidirectional else 1
    hx = (torch.randn(num_layers * D, B, proj_size or H, generator=gen) * 0.5,
          torch.randn(num_layers * D, B, H, generator=gen) * 0.5)
    return ref, fast, x, lengths, hx


# (layers, bidirectional, proj_size, H): H = 20 leaves a part-filled last panel (4H = 80), the
# projection (proj 8 of H 40) multiplies by both W_hh and W_hr.
SHAPES = [(1, False, 0, 20), (2, True, 0, 33), (1, True, 8, 40), (2, False, 16, 64)]


@pytest.mark.parametrize("how", ["own", "blas"])
@pytest.mark.parametrize("num_layers,bidirectional,proj_size,H", SHAPES)
@pytest.mark.parametrize("kind", ["random", "has_zero"])
def test_training_matches_nn_lstm(step_gemm, how, num_layers, bidirectional, proj_size, H, kind):
    step_gemm(how)
    ref, fast, x, lengths, hx = case(num_layers, bidirectional, proj_size, H, kind)
    lengths[0] = max(lengths[0], MIN_STEPS)
    before = step_gemms()
    check_parity(ref, fast, x, lengths, hx=hx)
    used = step_gemms() - before
    assert (used > 0) == (how == "own"), f"{used} own step GEMMs with FASTLSTM_CPU_STEP_GEMM={how}"


@pytest.mark.parametrize("thread_count", [1, 2, 3])
def test_inference_matches_nn_lstm_on_any_thread_count(step_gemm, threads, thread_count):
    step_gemm("own")
    ref, fast, x, lengths, hx = case(2, True, 0, 48, "has_zero", B=9, T=13)
    with torch.no_grad():
        expected = reference_forward(ref, x, lengths, hx)
    threads(thread_count)
    before = step_gemms()
    with torch.no_grad():
        out, (h, c) = fast(x, hx, lengths=torch.tensor(lengths))
    assert step_gemms() > before
    for name, a, e in zip(("output", "h_n", "c_n"), (out, h, c), expected):
        assert_close(name, a, e, F32)


def test_default_step_gemm_by_dtype(monkeypatch):
    """float32, float16 and bfloat16 loops take the own step GEMM, float64 the BLAS."""
    monkeypatch.delenv("FASTLSTM_CPU_STEP_GEMM", raising=False)
    for dtype, B, want in ((F32, 3, True), (F32, 32, True), (torch.float64, 3, False),
                           (torch.float16, 3, True), (torch.bfloat16, 3, True),
                           (torch.bfloat16, 64, True)):
        torch.manual_seed(0)
        m = fastlstm.LSTM(5, 16, dtype=dtype)
        lengths = torch.full((B,), 4)
        lengths[0] = 6
        before = step_gemms()
        m(torch.randn(6, B, 5, dtype=dtype), lengths=lengths)[0].float().sum().backward()
        assert (step_gemms() > before) == want, (dtype, B)
    # A one-step loop keeps the plain GEMM (nothing to repay the packing).
    m = fastlstm.LSTM(5, 16)
    before = step_gemms()
    m(torch.randn(1, 3, 5), lengths=torch.tensor([1, 1, 1]))
    assert step_gemms() == before


@pytest.mark.parametrize("thread_count", [2, 3])
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_steps_partition_splits_large_weights_over_threads(step_gemm, monkeypatch, threads,
                                                           thread_count, mode):
    # FASTLSTM_CPU_PARTITION=steps: one group per direction, and a W_hh of 1 MB (H = 256) is
    # split by columns over the group's step team at every step (step_team.h); rows keeps it
    # whole.
    step_gemm("own")
    ref, fast = make_pair(7, 256, dtype=F32, seed=3)
    gen = torch.Generator().manual_seed(3)
    lengths = [60, 50, 20, 0]  # long enough for a helper that starts late to join the loop
    x = torch.randn(60, 4, 7, generator=gen)
    threads(thread_count)
    for partition, splits in (("steps", True), ("rows", False)):
        monkeypatch.setenv("FASTLSTM_CPU_PARTITION", partition)
        before = torch.ops.fastlstm._cpu_split_step_gemm_count()
        helped_before = torch.ops.fastlstm._cpu_step_team_helped_count()
        # A helper that the OS starts late joins a later step or call (step_team.h): up to
        # 20 calls, each judged.
        for _ in range(20 if splits else 1):
            if mode == "training":
                check_parity(ref, fast, x, lengths)
            else:
                with torch.no_grad():
                    expected = reference_forward(ref, x, lengths, None)
                    out, (h, c) = fast(x, lengths=torch.tensor(lengths))
                for name, a, e in zip(("output", "h_n", "c_n"), (out, h, c), expected):
                    assert_close(name, a, e, F32)
            if torch.ops.fastlstm._cpu_split_step_gemm_count() > before:
                break
        split = torch.ops.fastlstm._cpu_split_step_gemm_count() - before
        if splits:
            # Split wherever a helper joined; one the OS never started in time leaves the
            # leader to run alone (tests/test_cpu_partition.py tests the team itself).
            helped = torch.ops.fastlstm._cpu_step_team_helped_count() > helped_before
            assert split > 0 or not helped, (partition, split)
        else:
            assert split == 0, (partition, split)
