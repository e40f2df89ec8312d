"""The CPU half types' row conversions (csrc/cpu/convert.h): float narrowed to bfloat16 or
float16 and widened back, vectorised (F16C for float16, integer arithmetic for bfloat16), must
give torch's own conversions bit for bit: round to nearest even, ties, denormals, infinities,
the largest finite values and overflow; a NaN stays a NaN. tests/test_cpu_isa.py runs this file
under FASTLSTM_CPU_ISA=baseline too (scalar float16)."""

import pytest
import torch

import fastlstm  # noqa: F401  (loads the ops)

HALF = [torch.bfloat16, torch.float16]


def interesting_floats():
    """Random bit patterns over the whole float range, plus the edge cases: exact ties between
    neighbouring values of each half type, denormals of both, infinities, NaNs, signed
    zeros, the largest finite values and the values just past them."""
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(-2 ** 31, 2 ** 31, (4096,), generator=gen, dtype=torch.int64)
    random = bits.to(torch.int32).view(torch.float32)
    # Between two bfloat16 values: low 16 bits 0x8000 (a tie), 0x7FFF and 0x8001.
    base = torch.randint(0, 2 ** 15, (256,), generator=gen, dtype=torch.int32) << 16
    ties_bf16 = torch.cat([base | 0x8000, base | 0x7FFF, base | 0x8001]).view(torch.float32)
    # float16 ties: halfway between neighbouring float16 values, normal and denormal.
    h = torch.arange(0, 0x7BFF, 37, dtype=torch.int32).to(torch.int16).view(torch.float16)
    nxt = (torch.arange(0, 0x7BFF, 37, dtype=torch.int32) + 1).to(torch.int16)
    mid = (h.float() + nxt.view(torch.float16).float()) / 2
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), -float("nan"),
                            65504.0, 65519.0, 65520.0, -65520.0, 6e-8, 3e-8, 2.9e-8, 1e-40,
                            -1e-40, 3.3895e38, 3.4e38, torch.finfo(torch.float32).max,
                            torch.finfo(torch.float32).tiny])
    return torch.cat([random, ties_bf16, mid, -mid, special]).contiguous()


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_narrow_rounds_as_torch_does(dtype):
    x = interesting_floats()
    got = torch.ops.fastlstm._cpu_narrow(x, str(dtype).split(".")[-1])
    want = x.to(dtype)
    assert got.dtype == dtype and got.shape == want.shape
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    bits = torch.int16
    mismatch = (got.view(bits) != want.view(bits)) & ~nan
    assert not mismatch.any(), (x[mismatch][:5], got[mismatch][:5], want[mismatch][:5])


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_widen_is_exact(dtype):
    bits = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype).contiguous()  # every value of the type, NaNs included
    got = torch.ops.fastlstm._cpu_widen(x)
    want = x.float()
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))


def test_bad_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="x must be a contiguous float32 CPU tensor, got "):
        torch.ops.fastlstm._cpu_narrow(torch.zeros(3, dtype=torch.float64), "float16")
    with pytest.raises(ValueError, match="dtype must be 'bfloat16' or 'float16', got 'int8'"):
        torch.ops.fastlstm._cpu_narrow(torch.zeros(3), "int8")
    with pytest.raises(ValueError, match="x must be a contiguous bfloat16 or float16 CPU"):
        torch.ops.fastlstm._cpu_widen(torch.zeros(3))
