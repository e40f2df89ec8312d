"""The float32 cell kernel and the per-step float32 GEMM are compiled three times each
(csrc/cpu/cell.cpp, csrc/cpu/step_gemm.cpp: AVX-512, AVX2, baseline x86-64) and the best one
the CPU has is picked once per process, on the first call, unless FASTLSTM_CPU_ISA caps it. The
default run of the suite therefore only tests the best variant. Here each other variant gets its own
subprocess running the float32 and float64 parity subset (the cell-math sweep, the float32
parity grid, NaN / Inf padding, a float64 grid, the step GEMM's products) under
FASTLSTM_CPU_ISA=<variant>.

A variant is skipped only where the CPU lacks it, and the skip reason says so (tests/conftest.py
lets exactly these skips through under CI=true).
"""

import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import fastlstm  # noqa: F401  (loads the ops)

HERE = os.path.dirname(os.path.abspath(__file__))

# What each variant needs, as cell.cpp's pick_f32_kernels() asks __builtin_cpu_supports.
NEEDS = {
    "avx512": ("avx512f", "avx512vl", "avx512dq", "avx512bw"),
    "avx2": ("avx2", "fma"),
    "baseline": (),
}

SUBSET = [
    "test_cell_math.py",
    "test_parity.py::test_float32",
    "test_parity.py::test_nan_inf_padding",
    "test_parity.py::test_layers_and_directions",
    # the per-step float32 GEMM's variant (csrc/cpu/step_gemm.cpp), which test_float32's
    # loops run too
    "test_cpu_step_gemm.py::test_product_matches_float64",
    "test_cpu_step_gemm.py::test_lowp_product_matches_float64",
    # the half types' row conversions (F16C, or scalar under baseline)
    "test_cpu_convert.py",
    "test_cpu_step_gemm.py::test_inference_matches_nn_lstm_on_any_thread_count",
]
MIN_TESTS = 215  # the subset holds 223; fewer means the selection silently shrank


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def missing_reason(isa):
    """None when this CPU can run `isa`'s kernel, else the skip reason (starting 'CPU lacks')."""
    if not NEEDS[isa]:
        return None
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return f"CPU lacks {isa}: not an x86-64 CPU ({machine}), only the baseline kernel exists"
    flags = cpu_flags()
    if flags is None:  # not Linux: ask torch, which checks the same features
        cap = torch.backends.cpu.get_cpu_capability()
        has = {"avx512": cap == "AVX512", "avx2": cap in ("AVX2", "AVX512")}[isa]
        return None if has else f"CPU lacks {isa} (torch reports CPU capability {cap})"
    lacking = [f for f in NEEDS[isa] if f not in flags]
    if lacking:
        return f"CPU lacks {isa}: no {', '.join(lacking)} in /proc/cpuinfo"
    return None


# The variant this process runs (the best the CPU has, or FASTLSTM_CPU_ISA's): the rest of the
# suite tests it already, so only the others get a subprocess.
IN_USE = torch.ops.fastlstm._cpu_isa()


@pytest.mark.slow
@pytest.mark.parametrize("isa", [isa for isa in NEEDS if isa != IN_USE])
def test_parity_subset_under_each_isa(isa, tmp_path):
    reason = missing_reason(isa)
    if reason:
        # Never skip a variant that torch's own detection says this CPU has.
        cap = torch.backends.cpu.get_cpu_capability()
        claims = {"avx512": ("AVX512",), "avx2": ("AVX2", "AVX512")}[isa]
        assert "ATEN_CPU_CAPABILITY" in os.environ or cap not in claims, \
            f"{reason}, yet torch reports CPU capability {cap}"
        pytest.skip(reason)
    report = tmp_path / "report.xml"
    env = dict(os.environ, FASTLSTM_CPU_ISA=isa)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}", *[os.path.join(HERE, s) for s in SUBSET]]
    proc = subprocess.run(cmd, cwd=os.path.dirname(HERE), env=env, capture_output=True,
                          text=True, timeout=600)
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, f"FASTLSTM_CPU_ISA={isa}: pytest failed:\n{proc.stdout[-6000:]}"
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    assert counts["tests"] >= MIN_TESTS, counts

