"""What a wheel promises beyond the stable ABI (docs/WHEELS.md), checked on the library this
suite imports (the tree's build under `make test`, the installed wheel under
scripts/ci_wheel.sh):

- glibc floor manylinux_2_28: no symbol version above GLIBC_2.28 (csrc/glibc_compat.cpp binds
  dlsym, exp and __libc_single_threaded to older ones), nor any GLIBCXX/CXXABI/GCC version
  outside auditwheel's manylinux_2_28 policy;
- the CUDA libraries it links are of the CUDA major version recorded in
  fastlstm/_build_info.py (+cu12: libcudart.so.12 and libcublas.so.12, no CUDA 13 library);
- the import-time check (fastlstm/_cuda_check.py): a torch of another CUDA major version,
  faked in a subprocess by setting torch.version.cuda before `import fastlstm`, gets one clear
  error naming both versions and the wheel to install, before the library is loaded.
"""

import importlib.util
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = importlib.util.find_spec("fastlstm")
PACKAGE = pathlib.Path(SPEC.origin).parent
BUILD_INFO = PACKAGE / "_build_info.py"
# manylinux_2_28's symbol versions (auditwheel's policy; AlmaLinux 8: glibc 2.28, GCC 8).
GLIBC_FLOOR = (2, 28)


def _library():
    libs = sorted(PACKAGE.glob("_C*.so"))
    assert libs, f"no fastlstm/_C*.so in {PACKAGE}"
    return libs[0]


def _run(*cmd):
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} (binutils) is not installed")
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _recorded_major():
    assert BUILD_INFO.exists(), f"{BUILD_INFO} missing: setup.py writes it with the library"
    return runpy.run_path(str(BUILD_INFO))["CUDA_MAJOR"]


def test_library_needs_no_glibc_above_2_28():
    versions = set(re.findall(r"\bGLIBC_([0-9.]+)\b", _run("objdump", "-T", str(_library()))))
    assert versions, "objdump listed no GLIBC version"
    too_new = sorted(v for v in versions if tuple(map(int, v.split("."))) > GLIBC_FLOOR)
    assert not too_new, (f"{_library().name} needs GLIBC {too_new} (above manylinux_2_28); "
                         "bind them to older versions in csrc/glibc_compat.cpp")


def test_library_needs_only_manylinux_2_28_cxx_runtime():
    auditwheel = pytest.importorskip("auditwheel")
    import json
    policy_file = pathlib.Path(auditwheel.__file__).parent / "policy" / "manylinux-policy.json"
    policy = next(p for p in json.loads(policy_file.read_text()) if p["name"] == "manylinux_2_28")
    allowed = policy["symbol_versions"]["x86_64"]
    needed = set(re.findall(r"\b(GLIBC|GLIBCXX|CXXABI|GCC)_([0-9][0-9.]*)\b",
                            _run("objdump", "-T", str(_library()))))
    bad = sorted(f"{lib}_{v}" for lib, v in needed if v not in allowed[lib])
    assert not bad, f"versions outside manylinux_2_28: {bad}"


def test_library_links_the_cuda_major_it_records():
    major = _recorded_major()
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                        _run("readelf", "-d", str(_library())))
    cuda = sorted(n for n in needed if re.match(r"lib(cudart|cublas|cublasLt)\.so\.\d+$", n))
    if major is None:
        assert not cuda, f"a CPU build links CUDA libraries: {cuda}"
        return
    assert f"libcudart.so.{major}" in cuda and f"libcublas.so.{major}" in cuda, (major, needed)
    other = [n for n in cuda if not n.endswith(f".so.{major}")]
    assert not other, f"a CUDA {major} build links another CUDA major's libraries: {other}"


def _import_with(torch_cuda, fake_record=None, then=""):
    """`import fastlstm` in a fresh interpreter whose torch.version.cuda is torch_cuda (None: a
    CPU torch) and, when fake_record is given, whose fastlstm/_build_info.py records
    CUDA_MAJOR = fake_record[0]; then: code run after the import. Returns (returncode,
    stdout + stderr)."""
    code = textwrap.dedent(f"""
        import sys, types, torch
        torch.version.cuda = {torch_cuda!r}
        fake = {fake_record!r}
        if fake is not None:
            info = types.ModuleType("fastlstm._build_info")
            info.CUDA_MAJOR = fake[0]
            sys.modules["fastlstm._build_info"] = info
        try:
            import fastlstm
        except ImportError as e:
            print("ERROR", type(e).__name__, e)
            print("LIBRARY LOADED" if "fastlstm._C" in sys.modules else "LIBRARY NOT LOADED")
            sys.exit(3)
        print("IMPORTED", fastlstm.__file__)
    """) + then
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent)] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=str(PACKAGE.parent), timeout=120)
    return r.returncode, r.stdout + r.stderr


def _mismatch_case():
    """(recorded major, whether it is faked): the build's own, or 13 faked on a CPU build."""
    major = _recorded_major()
    return (major, None) if major is not None else ("13", ("13",))


def test_torch_of_another_cuda_major_gets_one_clear_error():
    major, fake = _mismatch_case()
    other = "12" if major != "12" else "13"
    rc, out = _import_with(f"{other}.8", fake)
    assert rc == 3, out
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, out
    msg = errors[0]
    assert msg.startswith("ERROR CudaMismatchError"), msg
    assert f"built for CUDA {major}" in msg and f"CUDA {other}.8" in msg, msg
    assert f"+cu{other}-cp310-abi3-manylinux_2_28_x86_64.whl" in msg, msg
    assert "LIBRARY NOT LOADED" in out, out  # the check ran before _C was loaded
    assert ".so" not in msg.replace(".whl", ""), msg  # no loader error about a library


def test_cpu_torch_gets_the_cpu_wheel_named():
    major, fake = _mismatch_case()
    rc, out = _import_with(None, fake)
    assert rc == 3, out
    assert "not built for CUDA" in out and "+cpu-cp310-abi3" in out, out
    assert "LIBRARY NOT LOADED" in out, out


def test_matching_torch_imports():
    import torch
    rc, out = _import_with(torch.version.cuda)
    assert rc == 0 and "IMPORTED" in out, out


def test_cpu_build_loads_into_any_torch():
    # A +cpu record: no check, whatever torch's CUDA (the library this torch loads is real).
    # One interpreter (a torch import costs seconds): imported with CUDA 12.8, then the same
    # check run again as torch 13.0 and a CPU torch would have it run.
    rc, out = _import_with("12.8", (None,), then=textwrap.dedent("""
        from fastlstm._cuda_check import check_torch_cuda
        for cuda in ("13.0", None):
            torch.version.cuda = cuda
            check_torch_cuda()
            print("CHECKED", cuda)
    """))
    assert rc == 0 and "IMPORTED" in out, out
    assert "CHECKED 13.0" in out and "CHECKED None" in out, out
