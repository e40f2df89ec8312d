"""The extension is built on PyTorch's stable ABI and Python's limited API, so that one binary
serves every torch >= 2.10 on every CPython >= 3.10 (see setup.py). These tests check the
built library and the sources for anything that would tie it to one torch or one Python."""

import pathlib
import re
import shutil
import subprocess

import pytest
import torch

import fastlstm._C

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARY = pathlib.Path(fastlstm._C.__file__)


def _run(*cmd):
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} (binutils) is not installed")
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def test_library_is_tagged_abi3():
    # A version-specific build would be named _C.cpython-311-x86_64-linux-gnu.so.
    assert LIBRARY.name.endswith(".abi3.so"), LIBRARY.name


def test_library_links_no_torch_cpp_symbols():
    # Every dynamic symbol, defined or not, demangled. A C++ symbol of torch's own namespaces
    # (c10::, at::, torch::) would bind the library to one torch's C++ ABI; the stable ABI
    # goes through C functions (aoti_torch_*, torch_*) only.
    symbols = _run("nm", "-D", "-C", str(LIBRARY)).splitlines()
    assert len(symbols) > 20, symbols  # nm really listed the library
    assert any("aoti_torch_" in s for s in symbols), "no stable-ABI shim call found"
    bad = [s for s in symbols if re.search(r"\b(c10|at|torch|caffe2)::", s)]
    assert not bad, "torch C++ symbols in the library:\n" + "\n".join(bad[:20])


def test_library_exports_only_the_module_init():
    # -fvisibility=hidden: the module's entry point is the one symbol of ours that is exported
    # (the rest is libstdc++'s weak template instances).
    defined = _run("nm", "-D", "-C", "--defined-only", str(LIBRARY)).splitlines()
    ours = [s for s in defined if "fastlstm" in s or re.search(r" [TDB] (?!_init|_fini)", s)]
    assert [s.split()[-1] for s in ours] == ["PyInit__C"], ours


def test_library_does_not_need_torch_python():
    # torch_python carries torch's version-specific Python bindings.
    needed = _run("readelf", "-d", str(LIBRARY))
    assert "libtorch_python" not in needed, needed


def test_sources_include_no_aten_or_c10_headers():
    # TORCH_TARGET_VERSION would reject many of them at compile time; this catches them all.
    pattern = re.compile(r'#\s*include\s*[<"](ATen/|c10/|torch/library\.h|torch/extension\.h|'
                         r'torch/torch\.h|torch/all\.h)')
    offenders = []
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix in (".h", ".cuh", ".cpp", ".cu"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_emulator_runtime_includes_nothing_from_the_cuda_sources():
    """csrc/simt/ is the emulator's runtime alone; what builds csrc/cuda/ for the CPU lives in
    csrc/emulated/ (so the runtime can be read, tested and changed on its own)."""
    pattern = re.compile(r'#\s*include\s*"(\.\./cuda/|\.\./emulated/)')
    offenders = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
                 for path in sorted((ROOT / "csrc" / "simt").iterdir())
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert not offenders, "\n".join(offenders)


def test_ops_registered_through_the_stable_abi_work():
    # The kernels behind every op of the schema are reachable (a missing registration would
    # only show when the op is called).
    x = torch.randn(3, 2, 2)
    h = torch.zeros(1, 2, 3)
    w = [torch.randn(12, 2), torch.randn(12, 3)]
    out, h_n, c_n, reserve = torch.ops.fastlstm.lstm_layer_forward(
        x, torch.tensor([3, 1]), h, h, w, False, False, False)
    inf = torch.ops.fastlstm.lstm_layer_inference(x, torch.tensor([3, 1]), h, h, w, False, False,
                                                   False)
    torch.testing.assert_close(inf[0], out, rtol=0, atol=0)
    assert torch.count_nonzero(out[1:, 1]) == 0
    grads = torch.ops.fastlstm.lstm_layer_backward(
        torch.ones_like(out), None, None, x, torch.tensor([3, 1]), h, h, w, reserve, False,
        False, False, True)
    assert grads[0].shape == x.shape and len(grads[3]) == 2
