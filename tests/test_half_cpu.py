"""bfloat16 and float16 on the CPU, and torch.autocast("cpu").

The bound (issue "CPU inference that never loses"): fastlstm's error against a float64 run of
the same weights is at most twice nn.LSTM's own error in that dtype on the CPU (nn.LSTM over
pack_padded_sequence, the judge). Cell state and sums are kept in float32.
"""

import ctypes
import os

import pytest
import torch

import fastlstm
from helpers import cpu_has, make_pair, max_abs_err, run_judged

F64 = torch.float64
HALF = [torch.bfloat16, torch.float16]


CASES = {
    "uni": dict(num_layers=1, bidirectional=False),
    "bi2": dict(num_layers=2, bidirectional=True),
    "bi_proj": dict(num_layers=1, bidirectional=True, proj_size=24),
}


# The per-step products' kernels (csrc/cpu/step_gemm.h), forced through the environment:
# fastlstm's own on float panels (both dtypes widened to float), its own bfloat16 kernels on
# pairs of k (AVX512_BF16) and on AMX tiles (AMX-BF16), and the BLAS's GEMM (MKL's
# cblas_gemm_*f32 where torch has it).
KERNELS = {"float": {"FASTLSTM_CPU_STEP_GEMM": "own", "FASTLSTM_CPU_BF16_KERNEL": "float"},
           "pairs": {"FASTLSTM_CPU_STEP_GEMM": "own", "FASTLSTM_CPU_BF16_KERNEL": "pairs"},
           "amx": {"FASTLSTM_CPU_STEP_GEMM": "own", "FASTLSTM_CPU_BF16_KERNEL": "amx"},
           "blas": {"FASTLSTM_CPU_STEP_GEMM": "blas"}}
NEEDS = {"pairs": "avx512_bf16", "amx": "amx_bf16"}
DTYPE_KERNELS = [(torch.bfloat16, k) for k in KERNELS] + [(torch.float16, "float"),
                                                         (torch.float16, "blas")]


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype,kernel", DTYPE_KERNELS, ids=lambda v: str(v).split(".")[-1])
def test_error_within_twice_nn_lstm(dtype, kernel, case, grad, monkeypatch):
    if kernel in NEEDS and not cpu_has(NEEDS[kernel]):
        pytest.skip(f"CPU lacks {NEEDS[kernel]} (the {kernel} kernel)")
    for name, value in KERNELS[kernel].items():
        monkeypatch.setenv(name, value)
    if dtype == torch.bfloat16 and kernel != "blas" and "FASTLSTM_CPU_ISA" not in os.environ:
        if torch.ops.fastlstm._cpu_isa() == "avx512":
            assert torch.ops.fastlstm._cpu_bf16_kernel() == kernel
    T, B, I, H = 40, 12, 32, 64
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[0], lengths[5] = T, 0
    ref64, fast64 = make_pair(I, H, F64, **CASES[case])
    ref, fast = make_pair(I, H, dtype, **CASES[case])
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    D = 2 if ref.bidirectional else 1
    L, Hout = ref.num_layers, ref.proj_size or H
    x = torch.randn(T, B, I, generator=gen, dtype=F64)
    hx = (torch.randn(L * D, B, Hout, generator=gen, dtype=F64) * 0.5,
          torch.randn(L * D, B, H, generator=gen, dtype=F64) * 0.5)
    # Inputs rounded to the dtype once, so that every run sees the same values.
    x = x.to(dtype).to(F64)
    hx = tuple(h.to(dtype).to(F64) for h in hx)
    exact = run_judged(ref64, x, lengths, hx, grad, fast=False)
    judge = run_judged(ref, x.to(dtype), lengths, tuple(h.to(dtype) for h in hx), grad,
                       fast=False)
    before = torch.ops.fastlstm._cpu_step_gemm_count()
    ours = run_judged(fast, x.to(dtype), lengths, tuple(h.to(dtype) for h in hx), grad,
                      fast=True)
    own = torch.ops.fastlstm._cpu_step_gemm_count() - before
    assert (own > 0) == (kernel != "blas"), f"{own} own step GEMMs with kernel {kernel}"
    names = ["output", "h_n", "c_n"] + (["grad_x"] + [n for n, _ in ref.named_parameters()]
                                         if grad else [])
    for name, e, j, o in zip(names, exact, judge, ours):
        assert o.dtype == dtype, name
        err_j, err_o = max_abs_err(j, e), max_abs_err(o, e)
        print(f"  {name:18s} nn.LSTM {err_j:.3e}  fastlstm {err_o:.3e}  ratio "
              f"{err_o / max(err_j, 1e-30):.2f}")
        assert err_o <= 2 * err_j, f"{name}: fastlstm error {err_o:.3e} > 2 x nn.LSTM's {err_j:.3e}"


@pytest.mark.parametrize("dtype,kernel", DTYPE_KERNELS, ids=lambda v: str(v).split(".")[-1])
def test_inference_in_many_chunks_within_twice_nn_lstm(dtype, kernel, monkeypatch):
    """Inference projects its inputs in chunks of steps (256 KiB of float gates: 256 rows at
    H = 64); with several chunks, bfloat16 and float16 pack W_ih once for all of them
    (CpuBackend::input_weight) unless the BLAS is forced. Error against float64 at most twice
    nn.LSTM's in the same dtype."""
    if kernel in NEEDS and not cpu_has(NEEDS[kernel]):
        pytest.skip(f"CPU lacks {NEEDS[kernel]} (the {kernel} kernel)")
    for name, value in KERNELS[kernel].items():
        monkeypatch.setenv(name, value)
    T, B, I, H = 60, 40, 24, 64
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, T + 1, (B,), generator=gen).tolist()
    lengths[0], lengths[7] = T, 0
    assert sum(lengths) > 4 * 256  # several chunks
    ref64, fast64 = make_pair(I, H, F64, bidirectional=True)
    ref, fast = make_pair(I, H, dtype, bidirectional=True)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    x = torch.randn(T, B, I, generator=gen, dtype=F64).to(dtype).to(F64)
    hx = (torch.zeros(2, B, H, dtype=F64), torch.zeros(2, B, H, dtype=F64))
    exact = run_judged(ref64, x, lengths, hx, False, fast=False)
    judge = run_judged(ref, x.to(dtype), lengths, tuple(h.to(dtype) for h in hx), False,
                       fast=False)
    packed = torch.ops.fastlstm._cpu_packed_input_count()
    ours = run_judged(fast, x.to(dtype), lengths, tuple(h.to(dtype) for h in hx), False,
                      fast=True)
    assert (torch.ops.fastlstm._cpu_packed_input_count() > packed) == (kernel != "blas")
    for name, e, j, o in zip(["output", "h_n", "c_n"], exact, judge, ours):
        err_j, err_o = max_abs_err(j, e), max_abs_err(o, e)
        assert err_o <= 2 * err_j, f"{name}: fastlstm error {err_o:.3e} > 2 x nn.LSTM's {err_j:.3e}"


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_padding_and_zero_lengths(dtype):
    _, fast = make_pair(4, 8, dtype, bidirectional=True)
    x = torch.randn(6, 3, 4).to(dtype)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out, (h, c) = fast(x, lengths=[6, 0, 2])
        assert out.dtype == h.dtype == c.dtype == dtype
        assert (out[:, 1] == 0).all() and (out[2:, 2] == 0).all()
        assert (h[:, 1] == 0).all() and (c[:, 1] == 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cpu_bfloat16_like_nn_lstm(bidirectional):
    """Under torch.autocast("cpu", dtype=torch.bfloat16), as nn.LSTM on a padded batch: bfloat16
    output and state from float32 input and weights, close to nn.LSTM's; the parameters'
    gradients come back in float32."""
    T, B, I, H = 20, 5, 16, 32
    ref, fast = make_pair(I, H, torch.float32, bidirectional=bidirectional)
    x = torch.randn(T, B, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e_out, (e_h, e_c) = ref(x)
        out, (h, c) = fast(x, lengths=[T] * B)
    assert (out.dtype, h.dtype, c.dtype) == (e_out.dtype, e_h.dtype, e_c.dtype)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        exact, (exact_h, exact_c) = ref(x)
    assert max_abs_err(out, exact) <= 2 * max_abs_err(e_out, exact) + 1e-2
    assert max_abs_err(c, exact_c) <= 2 * max_abs_err(e_c, exact_c) + 1e-2
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in fast.parameters())


def test_autocast_cpu_off_for_float64_and_outside():
    _, fast = make_pair(4, 8, F64)
    x = torch.randn(5, 2, 4, dtype=F64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast(x, lengths=[5, 3])[0].dtype == F64
    _, fast32 = make_pair(4, 8, torch.float32)
    assert fast32(x.float(), lengths=[5, 3])[0].dtype == torch.float32


@pytest.mark.parametrize("bidirectional", [False, True])
def test_row_groups_share_one_pack_per_direction(bidirectional, monkeypatch, threads):
    """Under the rows partition each thread runs a group of rows; a direction's packed weights
    are made by its first group and shared by the others (OncePerDirection in
    csrc/layer_driver.h), so a layer call packs W_ih once per direction however many groups it
    runs. float16 inference in several chunks packs W_ih (test above); the output still
    matches nn.LSTM's error bound against float64."""
    monkeypatch.setenv("FASTLSTM_CPU_PARTITION", "rows")
    threads(4)
    T, B, I, H = 64, 16, 32, 128
    D = 2 if bidirectional else 1
    gen = torch.Generator().manual_seed(2)
    lengths = torch.full((B,), T)
    ref64, fast64 = make_pair(I, H, F64, bidirectional=bidirectional)
    ref, fast = make_pair(I, H, torch.float16, bidirectional=bidirectional)
    ref.load_state_dict(ref64.state_dict())
    fast.load_state_dict(ref64.state_dict())
    x = torch.randn(T, B, I, generator=gen, dtype=F64).half().double()
    hx = (torch.zeros(D, B, H, dtype=F64), torch.zeros(D, B, H, dtype=F64))
    exact = run_judged(ref64, x, lengths.tolist(), hx, False, fast=False)
    judge = run_judged(ref, x.half(), lengths.tolist(), tuple(h.half() for h in hx), False,
                       fast=False)
    packed = torch.ops.fastlstm._cpu_packed_input_count()
    ours = run_judged(fast, x.half(), lengths.tolist(), tuple(h.half() for h in hx), False,
                      fast=True)
    groups = torch.ops.fastlstm._cpu_last_row_groups()
    assert groups == 4, f"expected 4 row groups on 4 threads, got {groups}"
    assert torch.ops.fastlstm._cpu_packed_input_count() - packed == D, (
        "W_ih packed once per group, not once per direction")
    for name, e, j, o in zip(["output", "h_n", "c_n"], exact, judge, ours):
        assert max_abs_err(o, e) <= 2 * max_abs_err(j, e), name


CLEAR_REFS = "/proc/self/clear_refs"


def resident_peak_mib(fn):
    """MiB by which the process's resident high-water mark (Linux VmHWM, reset before) rose
    above its resident size while fn ran."""
    def kib(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    # Free memory that malloc still holds goes back to the OS first, else fn could reuse it
    # without the resident size rising.
    ctypes.CDLL(None).malloc_trim(0)
    before = kib("VmRSS")
    with open(CLEAR_REFS, "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    fn()
    return (kib("VmHWM") - before) / 1024


@pytest.mark.skipif(not os.access(CLEAR_REFS, os.W_OK), reason=f"{CLEAR_REFS} is not writable "
                    "(Linux only), so the resident high-water mark cannot be reset")
@pytest.mark.parametrize("trans", [True, False])
def test_float16_pack_widens_straight_into_the_panels(trans):
    """float16 step weights are packed as float32 panels (step_gemm.h). They are widened while
    packing, with no widened copy of the whole weight beside the panels: a pack of a 4096 x 1024
    weight (16 MiB of float32 panels) peaks near 16 MiB, where a widened copy first made it
    32. The product is checked too."""
    N, K = 4096, 1024
    gen = torch.Generator().manual_seed(0)
    w = torch.randn((N, K) if trans else (K, N), generator=gen).half()
    a = torch.randn(1, K, generator=gen).half()
    c = torch.zeros(1, N)
    out = []
    peak = resident_peak_mib(lambda: out.append(
        torch.ops.fastlstm._cpu_step_gemm(a, w, trans, 0.0, c)))
    panels_mib = N * K * 4 / 2**20
    assert peak < 1.5 * panels_mib, f"packing peaked at {peak:.1f} MiB above the resident size"
    expected = a.double() @ (w.double().t() if trans else w.double())
    torch.testing.assert_close(out[0].double(), expected, rtol=1e-5, atol=1e-4)
